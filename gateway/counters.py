"""The Prometheus series themselves, importable from anywhere (no app state here).

`metrics.py` exposes them; the modules doing the work count into them.

The request path counts into plain dicts (`Tally`, `Timings`): no lock, no
label lookup, and with `--workers N` no write into prometheus_client's
shared files per request. `fold()` adds what was counted to the real
series; metrics.py calls it every second, before answering a scrape, and on
shutdown, so a scrape is exact for the worker answering it and at most a
second behind for the others.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import Counter, Gauge, Histogram

_REQUESTS = Counter(
    "gateway_requests_total", "Requests answered, by route class and status.", ["route", "status"]
)
_UPSTREAM_SECONDS = Histogram(
    "gateway_upstream_response_seconds",
    "Time from sending a request upstream to its response headers.",
    ["upstream"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
_LOGINS = Counter("gateway_logins_total", "Sign-in attempts by result.", ["result"])
_CSRF_REFUSED = Counter(
    "gateway_csrf_refused_total",
    "Form posts refused by the CSRF check, by what failed: fetch-site, origin, cookie, token.",
    ["kind"],
)
_CLIENT_ABORTS = Counter(
    "gateway_client_aborts_total",
    "Proxied exchanges the client gave up on, by stage: upload or download.",
    ["stage"],
)
_BAD_REQUESTS = Counter(
    "gateway_bad_requests_total",
    "Requests refused by the HTTP parser (400 before any handler), by the parser's error.",
    ["error"],
)
_CONNECTIONS_DROPPED = Counter(
    "gateway_connections_dropped_total",
    "Connections closed before their first request head: head_timeout or too_many_pending.",
    ["reason"],
)
_SESSION_CACHE = Counter(
    "gateway_session_cache_total", "Session lookups by cache result.", ["result"]
)
DB_POOL = Gauge(
    "gateway_db_pool_connections",
    "Database connections of the pool, by state.",
    ["state"],
    multiprocess_mode="livesum",
)


class Tally:
    """A labelled Counter's increments, kept as plain ints until folded in."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._pending: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str) -> None:
        pending = self._pending
        pending[labels] = pending.get(labels, 0) + 1

    def fold(self) -> None:
        pending = self._pending
        for labels in list(pending):
            # Removed only once added: a failing inc keeps the rest for next time.
            self.counter.labels(*labels).inc(pending[labels])
            del pending[labels]


class Timings:
    """A Histogram with one label: observations kept as bucket counts until folded in."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        # The child's upper bounds, +Inf included: bucket i holds amounts <= bounds[i].
        self._bounds = tuple(histogram._upper_bounds)
        self._pending: dict[str, tuple[list[float], list[int]]] = {}

    def observe(self, label: str, seconds: float) -> None:
        entry = self._pending.get(label)
        if entry is None:
            entry = self._pending[label] = ([0.0], [0] * len(self._bounds))
        entry[0][0] += seconds
        entry[1][bisect_left(self._bounds, seconds)] += 1

    def fold(self) -> None:
        pending = self._pending
        for label in list(pending):
            total, counts = pending[label]
            child = self.histogram.labels(label)
            # prometheus_client has no public "add n observations"; its own
            # observe() is exactly these two steps, once per observation.
            # Each amount is zeroed once added, so a failure part-way keeps
            # only what was not added yet.
            child._sum.inc(total[0])
            total[0] = 0.0
            for i, count in enumerate(counts):
                if count:
                    child._buckets[i].inc(count)
                    counts[i] = 0
            del pending[label]


REQUESTS = Tally(_REQUESTS)
LOGINS = Tally(_LOGINS)
CSRF_REFUSED = Tally(_CSRF_REFUSED)
CLIENT_ABORTS = Tally(_CLIENT_ABORTS)
BAD_REQUESTS = Tally(_BAD_REQUESTS)
CONNECTIONS_DROPPED = Tally(_CONNECTIONS_DROPPED)
SESSION_CACHE = Tally(_SESSION_CACHE)
UPSTREAM_SECONDS = Timings(_UPSTREAM_SECONDS)
_ALL = (
    REQUESTS,
    LOGINS,
    CSRF_REFUSED,
    CLIENT_ABORTS,
    BAD_REQUESTS,
    CONNECTIONS_DROPPED,
    SESSION_CACHE,
    UPSTREAM_SECONDS,
)


def fold() -> None:
    """Add everything counted since the last fold to the Prometheus series."""
    for series in _ALL:
        series.fold()
