// troth dashboard: plain JS, no build step. Reads the public API (/promises, /schedules) and
// /ui/api/* (tasks, callbacks, overview); completes promises with PATCH /promises/{id}.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const AUTH_KEY = "troth-authorization";
const NEVER = 8.64e15; // beyond Date's range: the "never" timeout (2^63-1)
const LIVE_MS = 2000;
const ROOT_TAG = "troth:root";

let current = null; // the mounted view: {load: async () => void}
let busy = false;

// -- HTTP ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code;
    this.details = err.details || [];
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json", "X-Requested-With": "troth-ui" };
  const auth = sessionStorage.getItem(AUTH_KEY);
  if (auth) headers.Authorization = auth;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    const error = new ApiError(resp.status, data);
    if (resp.status === 401) showLogin(error);
    throw error;
  }
  return data;
}

const encodeId = (id) => encodeURIComponent(id).replace(/%2F/g, "/");

// -- formatting ------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function stateBadge(state) {
  return el("span", { class: `state state-${state}`, text: state });
}

function fmtTime(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "—";
  if (ms >= NEVER) return "never";
  const iso = new Date(ms).toISOString().replace("T", " ").slice(0, 19);
  return `${iso} (${relative(ms - now)})`;
}

function relative(delta) {
  const abs = Math.abs(delta);
  let text;
  if (abs < 1000) text = `${abs} ms`;
  else if (abs < 120000) text = `${Math.round(abs / 1000)} s`;
  else if (abs < 7200000) text = `${Math.round(abs / 60000)} min`;
  else if (abs < 172800000) text = `${Math.round(abs / 3600000)} h`;
  else text = `${Math.round(abs / 86400000)} d`;
  return delta >= 0 ? `in ${text}` : `${text} ago`;
}

function b64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function bytesToB64(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

// A value's data shown as JSON (pretty), else text, else its size and base64.
function decodeValue(value) {
  if (!value || (!value.data && !value.headers)) return "(empty)";
  let out = "";
  if (value.headers && Object.keys(value.headers).length) {
    out += Object.entries(value.headers).map(([k, v]) => `${k}: ${v}`).join("\n") + "\n\n";
  }
  if (!value.data) return out + "(no data)";
  const bytes = b64ToBytes(value.data);
  let text;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (e) {
    return out + `(${bytes.length} bytes, binary)\n${value.data}`;
  }
  try { return out + JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return out + text; }
}

function tags(t) {
  const span = el("span");
  for (const [k, v] of Object.entries(t || {})) span.append(el("span", { class: "tag", text: `${k}=${v}` }));
  return span;
}

function showError(err) {
  const box = $("#error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = err.code ? `error ${err.code}: ${err.message}` : String(err.message || err);
}

// -- auth ------------------------------------------------------------------------------

function showLogin(error) {
  const scheme = ((error.details || []).find((d) => d && d.scheme) || {}).scheme || "";
  $("#login").hidden = false;
  $("#login-token-row").hidden = scheme === "Basic";
  $("#login-basic-row").hidden = scheme === "Bearer";
  $("#login-why").textContent = error.message;
}

function setupLogin() {
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("#login-token").value;
    const user = $("#login-user").value;
    if (!$("#login-token-row").hidden && token) {
      sessionStorage.setItem(AUTH_KEY, `Bearer ${token}`);
    } else {
      const bytes = new TextEncoder().encode(`${user}:${$("#login-password").value}`);
      sessionStorage.setItem(AUTH_KEY, `Basic ${bytesToB64(bytes)}`);
    }
    $("#login").hidden = true;
    $("#login-token").value = $("#login-password").value = "";
    $("#logout").hidden = false;
    route();
  });
  $("#logout").hidden = !sessionStorage.getItem(AUTH_KEY);
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(AUTH_KEY);
    location.reload();
  });
}

// -- views -----------------------------------------------------------------------------

function mount(id) {
  const view = $("#view");
  view.replaceChildren($(`#tpl-${id}`).content.cloneNode(true));
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.id === `nav-${id}`);
  return view;
}

function promisesView(params) {
  mount("promises");
  const form = { id: $("#search-id"), state: $("#search-state"), tags: $("#search-tags") };
  form.id.value = params.get("id") || "*";
  form.state.value = params.get("state") || "";
  form.tags.value = params.get("tags") || "";
  const pages = [null]; // cursors of the pages shown so far (null: the first)
  let next = null;

  async function load() {
    const q = new URLSearchParams({ id: form.id.value || "*", limit: $("#page-size").value });
    if (form.state.value) q.set("state", form.state.value);
    for (const pair of (form.tags.value || "").split(",")) {
      const [k, ...rest] = pair.split("=");
      if (k.trim() && rest.length) q.set(`tags[${k.trim()}]`, rest.join("=").trim());
    }
    const cursor = pages[pages.length - 1];
    if (cursor) q.set("cursor", cursor);
    const page = await api("GET", `/promises?${q}`);
    const now = Date.now();
    const rows = page.promises.map((p) => el("tr", { class: "promise-row", "data-id": p.id },
      el("td", { class: "id" }, el("a", { href: `#/promise/${encodeURIComponent(p.id)}`, text: p.id })),
      el("td", {}, stateBadge(p.state)),
      el("td", { text: fmtTime(p.createdOn, now) }),
      el("td", { text: fmtTime(p.timeout, now) }),
      el("td", {}, tags(p.tags))));
    $("#promise-rows").replaceChildren(...rows);
    $("#promise-count").textContent = `page ${pages.length}: ${rows.length} promise(s)`;
    next = page.cursor;
    $("#next-page").disabled = !next;
    $("#first-page").disabled = pages.length === 1;
  }

  $("#search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, input] of Object.entries(form)) if (input.value) q.set(k, input.value);
    history.replaceState(null, "", `#/promises?${q}`);
    pages.length = 1;
    refresh();
  });
  $("#next-page").addEventListener("click", () => { if (next) { pages.push(next); refresh(); } });
  $("#first-page").addEventListener("click", () => { pages.length = 1; refresh(); });
  $("#page-size").addEventListener("change", () => { pages.length = 1; refresh(); });
  return { load };
}

function buildTree(root, descendants) {
  const prefix = `${root.id}.`;
  const byPath = new Map([["", { p: root, children: [] }]]);
  const key = (s) => (/^\d+$/.test(s) ? [0, Number(s), ""] : [1, 0, s]);
  const cmp = (a, b) => {
    const sa = a.split("."), sb = b.split(".");
    for (let i = 0; i < Math.min(sa.length, sb.length); i++) {
      const ka = key(sa[i]), kb = key(sb[i]);
      for (let j = 0; j < 3; j++) if (ka[j] !== kb[j]) return ka[j] < kb[j] ? -1 : 1;
    }
    return sa.length - sb.length;
  };
  for (const p of descendants) {
    if (p.id.startsWith(prefix) && p.id.length > prefix.length) byPath.set(p.id.slice(prefix.length), { p, children: [] });
  }
  for (const path of [...byPath.keys()].filter((k) => k).sort(cmp)) {
    let parent = path.split(".").slice(0, -1);
    while (parent.length && !byPath.has(parent.join("."))) parent = parent.slice(0, -1);
    byPath.get(parent.join(".")).children.push(byPath.get(path));
  }
  return byPath.get("");
}

function renderTree(node, current) {
  const p = node.p;
  const label = p.id === current ? el("strong", { text: p.id })
    : el("a", { href: `#/promise/${encodeURIComponent(p.id)}`, text: p.id });
  const func = (p.tags || {})["troth:func"];
  const li = el("li", { class: "tree-node", "data-id": p.id }, label, " ", stateBadge(p.state),
    func ? el("span", { class: "muted", text: ` ${func}` }) : null);
  if (node.children.length) li.append(el("ul", {}, ...node.children.map((c) => renderTree(c, current))));
  return li;
}

function kv(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => el("tr", {}, el("td", { text: k }),
    el("td", {}, typeof v === "string" ? el("span", { class: "mono", text: v }) : v))));
}

function promiseView(id) {
  mount("promise");
  $("#detail-id").textContent = id;

  async function load() {
    const p = await api("GET", `/promises/${encodeId(id)}`);
    const now = Date.now();
    $("#detail-state").replaceChildren(stateBadge(p.state));
    const root = (p.tags || {})[ROOT_TAG];
    kv($("#detail-fields"), [
      ["state", p.state],
      ["created", fmtTime(p.createdOn, now)],
      ["timeout", fmtTime(p.timeout, now)],
      ["completed", fmtTime(p.completedOn, now)],
      ["idempotency key (create)", p.idempotencyKeyForCreate || "—"],
      ["idempotency key (complete)", p.idempotencyKeyForComplete || "—"],
      ["execution root", root && root !== p.id
        ? el("a", { href: `#/promise/${encodeURIComponent(root)}`, text: root }) : (root || "—")],
    ]);
    $("#detail-param").textContent = decodeValue(p.param);
    $("#detail-value").textContent = decodeValue(p.value);
    kv($("#detail-tags"), Object.entries(p.tags || {}));
    const pending = p.state === "PENDING";
    for (const b of ["#resolve", "#reject", "#cancel"]) $(b).disabled = !pending;
    $("#complete-value").disabled = !pending;

    const [cbs, tasks, tree] = await Promise.all([
      api("GET", `/ui/api/callbacks/${encodeId(id)}`),
      api("GET", `/ui/api/tasks?root=${encodeURIComponent(id)}`),
      api("GET", `/promises?${new URLSearchParams({ id: `${id}.*`, limit: "1000" })}`),
    ]);
    $("#detail-callbacks").replaceChildren(
      el("tr", {}, ...["id", "root", "receiver", "timeout"].map((h) => el("th", { text: h }))),
      ...cbs.callbacks.map((c) => el("tr", {}, el("td", { class: "id", text: c.id }),
        el("td", { class: "id", text: c.rootPromiseId || "—" }),
        el("td", { text: JSON.stringify(c.recv) }), el("td", { text: fmtTime(c.timeout, now) }))));
    $("#detail-tasks").replaceChildren(
      el("tr", {}, ...["task", "state", "counter", "process", "lease until"].map((h) => el("th", { text: h }))),
      ...tasks.tasks.map((t) => el("tr", {}, el("td", { class: "id", text: t.id }), el("td", {}, stateBadge(t.state)),
        el("td", { text: String(t.counter) }), el("td", { text: t.processId || "—" }),
        el("td", { text: fmtTime(t.expiresAt, tasks.now) }))));
    $("#detail-tree").replaceChildren(renderTree(buildTree(p, tree.promises), id));
  }

  async function complete(state) {
    const text = $("#complete-value").value;
    const body = { state };
    if (text) body.value = { data: bytesToB64(new TextEncoder().encode(text)) };
    try {
      await api("PATCH", `/promises/${encodeId(id)}`, body);
      $("#complete-value").value = "";
      showError(null);
    } catch (err) {
      showError(err);
    }
    await refresh();
  }
  $("#resolve").addEventListener("click", () => complete("RESOLVED"));
  $("#reject").addEventListener("click", () => complete("REJECTED"));
  $("#cancel").addEventListener("click", () => complete("REJECTED_CANCELED"));
  return { load };
}

function tasksView() {
  mount("tasks");
  async function load() {
    const data = await api("GET", "/ui/api/tasks?limit=200");
    $("#task-rows").replaceChildren(...data.tasks.map((t) => el("tr", { class: "task-row" },
      el("td", { class: "id" }, el("a", { href: `#/promise/${encodeURIComponent(t.rootPromiseId)}`, text: t.id })),
      el("td", {}, stateBadge(t.state)), el("td", { text: String(t.counter) }),
      el("td", { text: t.processId || "—" }), el("td", { text: fmtTime(t.expiresAt, data.now) }),
      el("td", { text: fmtTime(t.timeout, data.now) }), el("td", { text: JSON.stringify(t.recv.data) }))));
  }
  return { load };
}

function schedulesView() {
  mount("schedules");
  let cursor = null;
  async function load() {
    const q = new URLSearchParams({ id: "*", limit: "100" });
    if (cursor) q.set("cursor", cursor);
    const data = await api("GET", `/schedules?${q}`);
    const now = Date.now();
    $("#schedule-rows").replaceChildren(...data.schedules.map((s) => el("tr", { class: "schedule-row" },
      el("td", { class: "id", text: s.id }), el("td", { class: "mono", text: s.cron }),
      el("td", { class: "mono", text: s.promiseId }), el("td", { text: fmtTime(s.nextRunTime, now) }),
      el("td", { text: fmtTime(s.lastRunTime, now) }))));
    $("#schedules-next").hidden = !data.cursor;
    $("#schedules-next").onclick = () => { cursor = data.cursor; refresh(); };
  }
  return { load };
}

// -- router and live refresh -----------------------------------------------------------

async function loadOverview() {
  const o = await api("GET", "/ui/api/overview");
  const t = o.tasks || {};
  $("#overview").textContent = `${o.pending} pending · tasks: ${t.INIT || 0} init, ` +
    `${t.ENQUEUED || 0} enqueued, ${t.CLAIMED || 0} claimed · ${o.streams} worker stream(s)` +
    (o.prefix ? ` · scope ${o.prefix}` : "");
}

let again = false;

// Load the current view; a call while a load runs makes it load once more afterwards.
async function refresh() {
  if (!current) return;
  if (busy) { again = true; return; }
  busy = true;
  try {
    do {
      again = false;
      const view = current;
      try {
        await view.load();
        await loadOverview();
        document.body.dataset.loaded = String(Date.now());
      } catch (err) {
        if (err.status !== 401) showError(err);
      }
    } while (again);
  } finally {
    busy = false;
  }
}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  showError(null);
  if (path.startsWith("promise/")) current = promiseView(decodeURIComponent(path.slice(8)));
  else if (path === "tasks") current = tasksView();
  else if (path === "schedules") current = schedulesView();
  else current = promisesView(new URLSearchParams(query || ""));
  refresh();
}

window.addEventListener("hashchange", route);
setupLogin();
setInterval(() => {
  if ($("#live").checked && !document.hidden && $("#login").hidden) refresh();
}, LIVE_MS);
route();
