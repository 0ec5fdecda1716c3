-- Shared by the troth wrk scripts (loaded with dofile by each of them).
--
-- Environment (all optional, so a script also runs by hand):
--   TROTH_BENCH_NONCE    unique per wrk run; goes into every id so runs never collide
--   TROTH_BENCH_THREADS  the -t given to wrk (needed to split the preloaded id list)
--   TROTH_BENCH_IDS      file of existing PENDING ids, one per line (complete / mixed)
--
-- Each thread counts the write requests it generates (creates and completes; note that wrk
-- calls request() once more than it sends, on thread 0, to check the script: that first
-- request is never sent) and the responses it gets, by status; done() prints one line
-- "TROTH_BENCH_JSON {...}" with the totals and latency percentiles (microseconds), which
-- benchmarks/run.py parses.

local threads = {}
local next_tid = 0

nonce = os.getenv("TROTH_BENCH_NONCE") or string.format("%x%x", os.time(), math.random(1, 2 ^ 30))
nthreads = tonumber(os.getenv("TROTH_BENCH_THREADS") or "1")
TIMEOUT_NEVER = "9223372036854775807" -- 2^63-1, written as text: Lua numbers are doubles

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

-- per-thread state (each wrk thread has its own Lua state)
sent_create = 0
sent_complete = 0
statuses = {}

function count_response(status)
  statuses[status] = (statuses[status] or 0) + 1
end

-- The ids of the preloaded file that belong to this thread: lines i with i % nthreads == tid.
function load_ids()
  local path = os.getenv("TROTH_BENCH_IDS")
  local mine = {}
  if path == nil then
    return mine
  end
  local f = assert(io.open(path, "r"))
  local i = 0
  for line in f:lines() do
    if i % nthreads == tid then
      mine[#mine + 1] = line
    end
    i = i + 1
  end
  f:close()
  return mine
end

-- Percent-encode an id for the path (ids here are [A-Za-z0-9-] but stay correct anyway).
function encode_path(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

function create_request(id)
  sent_create = sent_create + 1
  return wrk.format(
    "POST",
    "/promises",
    { ["Content-Type"] = "application/json" },
    '{"id":"' .. id .. '","timeout":' .. TIMEOUT_NEVER .. "}"
  )
end

function complete_request(id)
  sent_complete = sent_complete + 1
  return wrk.format(
    "PATCH",
    "/promises/" .. encode_path(id),
    { ["Content-Type"] = "application/json" },
    '{"state":"RESOLVED"}'
  )
end

-- Sentinel when a thread has used up its preloaded ids: a path that cannot succeed, so the
-- run fails loudly instead of silently measuring something else.
exhausted = 0
function exhausted_request()
  exhausted = exhausted + 1
  return wrk.format("PATCH", "/promises/", { ["Content-Type"] = "application/json" }, "{}")
end

local function json_value(v)
  if type(v) == "table" then
    local parts = {}
    for k, x in pairs(v) do
      parts[#parts + 1] = '"' .. tostring(k) .. '":' .. json_value(x)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(v) == "number" then
    return string.format("%.17g", v)
  else
    return '"' .. tostring(v) .. '"'
  end
end

function done(summary, latency, requests)
  local creates, completes, total_exhausted, total_statuses = 0, 0, 0, {}
  for _, t in ipairs(threads) do
    creates = creates + (t:get("sent_create") or 0)
    completes = completes + (t:get("sent_complete") or 0)
    total_exhausted = total_exhausted + (t:get("exhausted") or 0)
    for status, n in pairs(t:get("statuses") or {}) do
      total_statuses[status] = (total_statuses[status] or 0) + n
    end
  end
  local out = {
    requests = summary.requests,
    duration_us = summary.duration,
    bytes = summary.bytes,
    errors = summary.errors,
    sent_create = creates,
    sent_complete = completes,
    exhausted = total_exhausted,
    statuses = total_statuses,
    latency_us = {
      min = latency.min,
      mean = latency.mean,
      max = latency.max,
      stdev = latency.stdev,
      p50 = latency:percentile(50),
      p90 = latency:percentile(90),
      p99 = latency:percentile(99),
      p999 = latency:percentile(99.9),
    },
  }
  io.write("TROTH_BENCH_JSON " .. json_value(out) .. "\n")
end
