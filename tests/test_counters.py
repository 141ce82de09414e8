"""counters.Tally / Timings: what the request path counts reaches Prometheus exactly once."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.counters import Tally, Timings

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_tally_counts_reach_the_counter_only_when_folded(registry):
    counter = Counter("t_requests", "test", ["route", "status"], registry=registry)
    tally = Tally(counter)
    for _ in range(3):
        tally.inc("proxy", "200")
    tally.inc("proxy", "401")
    assert sample(registry, "t_requests_total", route="proxy", status="200") == 0
    tally.fold()
    assert sample(registry, "t_requests_total", route="proxy", status="200") == 3
    assert sample(registry, "t_requests_total", route="proxy", status="401") == 1
    tally.fold()  # nothing new: folding twice must not count twice
    assert sample(registry, "t_requests_total", route="proxy", status="200") == 3
    tally.inc("proxy", "200")
    tally.fold()
    assert sample(registry, "t_requests_total", route="proxy", status="200") == 4


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        (0.0, "0.001"),
        (0.001, "0.001"),  # a bound is inclusive (le = "less or equal")
        (0.0010001, "0.01"),
        (0.05, "0.1"),
        (1.0, "1.0"),
        (7.0, "+Inf"),
    ],
)
def test_timings_fold_into_the_same_buckets_as_observe(registry, seconds, bucket):
    ours = Histogram("t_ours", "test", ["upstream"], buckets=BUCKETS, registry=registry)
    reference = Histogram("t_ref", "test", ["upstream"], buckets=BUCKETS, registry=registry)
    timings = Timings(ours)
    timings.observe("app", seconds)
    timings.observe("app", seconds)
    timings.fold()
    reference.labels("app").observe(seconds)
    reference.labels("app").observe(seconds)
    for le in ("0.001", "0.01", "0.1", "1.0", "+Inf"):
        got = sample(registry, "t_ours_bucket", upstream="app", le=le)
        assert got == sample(registry, "t_ref_bucket", upstream="app", le=le), le
    assert sample(registry, "t_ours_bucket", upstream="app", le=bucket) == 2
    assert sample(registry, "t_ours_count", upstream="app") == 2
    assert sample(registry, "t_ours_sum", upstream="app") == pytest.approx(2 * seconds)


def test_timings_keep_upstreams_apart_and_fold_once(registry):
    histogram = Histogram("t_up", "test", ["upstream"], buckets=BUCKETS, registry=registry)
    timings = Timings(histogram)
    timings.observe("a", 0.002)
    timings.observe("b", 0.5)
    timings.fold()
    timings.fold()
    assert sample(registry, "t_up_count", upstream="a") == 1
    assert sample(registry, "t_up_count", upstream="b") == 1
    assert sample(registry, "t_up_sum", upstream="b") == pytest.approx(0.5)


class FlakyCounter:
    """A counter whose first inc() fails, like a multiprocess file on a full disk."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, ...], float] = {}
        self.failures = 1

    def labels(self, *labels: str):
        counter = self

        class Child:
            def inc(self, amount: float) -> None:
                if counter.failures:
                    counter.failures -= 1
                    raise OSError("no space left on device")
                counter.totals[labels] = counter.totals.get(labels, 0) + amount

        return Child()


def test_a_failed_fold_keeps_what_it_could_not_add():
    counter = FlakyCounter()
    tally = Tally(counter)  # type: ignore[arg-type]
    tally.inc("a")
    tally.inc("a")
    tally.inc("b")
    with pytest.raises(OSError):
        tally.fold()
    tally.inc("a")
    tally.fold()
    assert counter.totals == {("a",): 3, ("b",): 1}
