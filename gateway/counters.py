"""The Prometheus series themselves, importable from anywhere (no app state here).

`metrics.py` exposes them; the modules doing the work count into them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "gateway_requests_total", "Requests answered, by route class and status.", ["route", "status"]
)
UPSTREAM_SECONDS = Histogram(
    "gateway_upstream_response_seconds",
    "Time from sending a request upstream to its response headers.",
    ["upstream"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LOGINS = Counter("gateway_logins_total", "Sign-in attempts by result.", ["result"])
SESSION_CACHE = Counter(
    "gateway_session_cache_total", "Session lookups by cache result.", ["result"]
)
DB_POOL = Gauge(
    "gateway_db_pool_connections",
    "Database connections of the pool, by state.",
    ["state"],
    multiprocess_mode="livesum",
)

# labels() takes a lock and builds a key on every call; the hot path reuses children.
CACHE_HIT = SESSION_CACHE.labels("hit")
CACHE_MISS = SESSION_CACHE.labels("miss")
_children: dict[tuple[object, ...], object] = {}


def child(metric: Counter | Histogram, *labels: str):
    key = (metric, *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found
