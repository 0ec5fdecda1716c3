"""Prometheus metrics at ``GET /metrics`` (prometheus-client's text exposition).

Cost model. The write path serves ~15k requests/s on one core, so nothing per request may
take a lock or allocate much: requests, promise transitions, dispatches and commits are
counted in plain Python ints and lists (``_Hist``), owned by the one thread that updates
them (the event loop; the SQLite writer thread for commits), and turned into metric families
only when Prometheus scrapes, by a custom collector. Gauges that describe storage (pending
promises, tasks by state, the oldest due timeout) are read at scrape time with indexed
queries (``Tx.count_pending_promises``, ``Tx.count_tasks_by_state``, ``Tx.next_deadline``),
never by scanning.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from troth.model import Promise, Recv, State

if TYPE_CHECKING:
    from troth.engine import Engine
    from troth.engine.dispatch import Sink
    from troth.server.stream import StreamRegistry

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds; request latencies from sub-millisecond reads to long polls.
REQUEST_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
DISPATCH_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)
COMMIT_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Hist:
    """A histogram without locks: one writer thread, read (possibly mid-update) by scrapes."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append((_le(bound), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out


def _le(bound: float) -> str:
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


class _TaskStub(msgspec.Struct):
    createdOn: int


class _MessageStub(msgspec.Struct):
    task: _TaskStub | None = None


_decode_message: Final = msgspec.json.Decoder(_MessageStub).decode


class Metrics:
    """Every troth metric of one server process, exposed through its own registry."""

    def __init__(self, engine: Engine, streams: StreamRegistry | None = None) -> None:
        self.engine = engine
        self.streams = streams
        # (method, route, status) → latency histogram (its count is the request count).
        self.requests: dict[tuple[str, str, int], _Hist] = {}
        self.created = 0
        self.completed: dict[str, int] = {}
        self.dispatch = _Hist(DISPATCH_BUCKETS)
        self.commit_latency = _Hist(COMMIT_BUCKETS)
        self.commit_batch = _Hist(BATCH_BUCKETS)
        self._pending = 0.0
        self._tasks: dict[str, int] = {}
        self._sweeper_lag = 0.0
        self._scrape_errors = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # -- hooks (hot paths: keep them tiny) ---------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        hist = self.requests.get(key)
        if hist is None:
            hist = self.requests[key] = _Hist(REQUEST_BUCKETS)
        hist.observe(seconds)

    def observe_promise(self, p: Promise) -> None:
        """Engine hook: a promise was written (created, completed or timed out)."""
        state = p.state
        if state is State.PENDING:
            self.created += 1
            return
        if p.created_on >= p.timeout:
            self.created += 1  # created already past its deadline: born timed out
        name = state.value
        self.completed[name] = self.completed.get(name, 0) + 1

    def observe_commit(self, batch: int, seconds: float) -> None:
        """Store hook, called on the SQLite writer thread after each commit."""
        self.commit_batch.observe(batch)
        self.commit_latency.observe(seconds)

    def observe_dispatch(self, message: bytes) -> None:
        """A task message left for a worker: how long after the task was created."""
        try:
            task = _decode_message(message).task
        except msgspec.DecodeError:
            return
        if task is not None:
            lag = self.engine.clock.now() - task.createdOn
            self.dispatch.observe(max(0, lag) / 1000)

    # -- scrape ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the storage gauges (indexed counts) before a scrape."""
        store = self.engine.store
        try:
            pending, tasks, deadline = await store.read(
                lambda tx: (
                    tx.count_pending_promises(),
                    tx.count_tasks_by_state(),
                    tx.next_deadline(),
                )
            )
        except Exception:  # storage down: the gauges keep their last values
            self._scrape_errors += 1
            return
        self._pending = float(pending)
        self._tasks = tasks
        now = self.engine.clock.now()
        self._sweeper_lag = max(0, now - deadline) / 1000 if deadline is not None else 0.0

    async def render(self) -> bytes:
        await self.refresh()
        return await asyncio.to_thread(generate_latest, self.registry)


class _Collector(Collector):
    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m = self.m
        requests = CounterMetricFamily(
            "troth_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels=["method", "route", "status"],
        )
        latency = HistogramMetricFamily(
            "troth_http_request_duration_seconds",
            "HTTP request latency (until the response is sent), by method, route and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), hist in sorted(m.requests.items()):
            labels = [method, route, str(status)]
            requests.add_metric(labels, hist.count)
            latency.add_metric(labels, hist.buckets(), hist.sum)
        yield requests
        yield latency
        created = CounterMetricFamily("troth_promises_created", "Promises created.")
        created.add_metric([], m.created)
        yield created
        completed = CounterMetricFamily(
            "troth_promises_completed",
            "Promises completed, by final state (RESOLVED, REJECTED, REJECTED_CANCELED, "
            "REJECTED_TIMEDOUT).",
            labels=["state"],
        )
        for state in State:
            if state is not State.PENDING:
                completed.add_metric([state.value], m.completed.get(state.value, 0))
        yield completed
        yield _gauge("troth_promises_pending", "Pending promises in storage.", m._pending)
        tasks = GaugeMetricFamily(
            "troth_tasks", "Unfinished tasks in storage, by state.", labels=["state"]
        )
        for task_state in ("INIT", "ENQUEUED", "CLAIMED"):
            tasks.add_metric([task_state], m._tasks.get(task_state, 0))
        yield tasks
        yield _histogram(
            "troth_task_dispatch_latency_seconds",
            "Time from a task's creation to its message leaving for a worker.",
            m.dispatch,
        )
        yield _gauge(
            "troth_longpoll_waiters",
            "Requests waiting on a promise (?wait=).",
            len(m.engine.waiters),
        )
        yield _gauge(
            "troth_worker_streams",
            "Open worker streams (GET /poll/{group}/{id}).",
            len(m.streams) if m.streams is not None else 0,
        )
        yield _gauge(
            "troth_sweeper_lag_seconds",
            "How late the oldest due promise timeout is (0 when none is overdue).",
            m._sweeper_lag,
        )
        yield _histogram(
            "troth_store_commit_batch_size",
            "Write operations per committed transaction (group commit).",
            m.commit_batch,
        )
        yield _histogram(
            "troth_store_commit_duration_seconds",
            "Time to run and commit one write transaction (including fsync).",
            m.commit_latency,
        )
        errors = CounterMetricFamily(
            "troth_metrics_storage_errors", "Scrapes whose storage gauges could not be read."
        )
        errors.add_metric([], m._scrape_errors)
        yield errors


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g


def _histogram(name: str, doc: str, hist: _Hist) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc)
    h.add_metric([], hist.buckets(), hist.sum)
    return h


class _CountingSink:
    __slots__ = ("_metrics", "_sink")

    def __init__(self, sink: Sink, metrics: Metrics) -> None:
        self._sink = sink
        self._metrics = metrics

    def send(self, message: bytes) -> bool:
        ok = self._sink.send(message)
        if ok:
            self._metrics.observe_dispatch(message)
        return ok


class MeasuredDelivery:
    """Wraps the server's ``Delivery`` to time task messages (dispatch latency)."""

    def __init__(self, inner: Any, metrics: Metrics | None) -> None:
        self._inner = inner
        #: Set after construction (the engine, which ``Metrics`` needs, takes the delivery).
        self.metrics = metrics

    def stream_for(self, recv: Recv) -> Sink | None:
        sink: Sink | None = self._inner.stream_for(recv)
        if sink is None or self.metrics is None:
            return sink
        return _CountingSink(sink, self.metrics)

    async def push(self, recv: Recv, message: bytes) -> bool:
        ok: bool = await self._inner.push(recv, message)
        if ok and self.metrics is not None:
            self.metrics.observe_dispatch(message)
        return ok

    async def aclose(self) -> None:
        await self._inner.aclose()


def route_template(method: str, path: str) -> str:
    """The route a path matches, as a template (bounded label values: ids never appear)."""
    if path in _FIXED:
        if path == "/promises/task" and method != "POST":
            return "/promises/{id}"
        return path
    for prefix, template in _PREFIXES:
        if path.startswith(prefix):
            return template
    return "unmatched"


_FIXED: Final = frozenset(
    {
        "/promises", "/promises/task", "/callbacks", "/subscriptions", "/tasks/claim",
        "/tasks/complete", "/tasks/drop", "/tasks/heartbeat", "/locks/acquire", "/locks/release",
        "/locks/heartbeat", "/schedules", "/ping", "/healthz", "/readyz", "/metrics",
        "/openapi.json", "/ui", "/ui/", "/sdk/batch", "/sdk/claim",
    }
)  # fmt: skip
_PREFIXES: Final = (
    ("/promises/callback/", "/promises/callback/{id}"),
    ("/promises/subscribe/", "/promises/subscribe/{id}"),
    ("/promises/", "/promises/{id}"),
    ("/tasks/claim/", "/tasks/claim/{id}/{counter}"),
    ("/tasks/complete/", "/tasks/complete/{id}/{counter}"),
    ("/tasks/drop/", "/tasks/drop/{id}/{counter}"),
    ("/tasks/heartbeat/", "/tasks/heartbeat/{id}"),
    ("/poll/", "/poll/{group}/{id}"),
    ("/schedules/", "/schedules/{id}"),
    ("/ui/api/", "/ui/api/*"),
    ("/ui/static/", "/ui/static/*"),
)


__all__ = ["CONTENT_TYPE", "MeasuredDelivery", "Metrics", "route_template"]
