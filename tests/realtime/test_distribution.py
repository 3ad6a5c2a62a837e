"""realtime.distribution: exact statistics while the values fit, percentiles within the histogram's
accuracy after, in memory that stops growing; a decimated series evenly spread over a run."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.distribution import DecimatedSeries, Distribution, latency_stats


def test_exact_while_the_values_fit() -> None:
    d = Distribution(exact=200)
    values = list(range(1, 101))
    d.extend([*values, None, float("nan")])  # None and NaN are not values
    assert d.is_exact and d.n == 100
    assert d.stats() == latency_stats(values)
    assert d.min_median_max() == {"min": 1.0, "median": 50.5, "max": 100.0}


def test_histogram_percentiles_within_the_accuracy_and_exact_moments() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(3.0, 0.5, 20_000), [0.0, 0.0, -2.0]])
    d = Distribution(exact=1000, relative_accuracy=0.005)
    d.extend(values)
    assert not d.is_exact and d.n == values.size
    for p in (5, 50, 90, 95, 99):
        assert d.percentile(p) == pytest.approx(np.percentile(values, p), rel=0.01)
    assert d.min == -2.0 and d.max == values.max() and d.percentile(100) == values.max()
    assert d.mean == pytest.approx(values.mean()) and d.std == pytest.approx(values.std())
    with pytest.raises(ValueError):
        d.values()


def test_bins_stop_growing() -> None:
    d = Distribution(exact=10)
    d.extend(np.linspace(1, 100, 50_000))
    bins = len(d._pos)
    d.extend(np.linspace(1, 100, 50_000))
    assert len(d._pos) == bins <= 1000  # log(100) / log(1.01): ~460 bins for two decades


def test_decimated_series_keeps_evenly_spread_points() -> None:
    s = DecimatedSeries(("t", "v"), capacity=8)
    for i in range(20):
        s.add(i, None if i == 4 else i * 10)
    assert len(s) <= 8 and s.stride == 4
    assert s.column("t").tolist() == [0, 4, 8, 12, 16]
    assert np.isnan(s.column("v")[1]) and s.column("v")[2] == 80


@pytest.mark.parametrize("exact", [1, 2, 10, 63, 64, 100])
def test_a_small_exact_part_bins_only_the_values_added(exact: int) -> None:
    """Past ``exact`` values the kept ones go into the histogram: only those (a buffer larger than ``exact`` once
    put its unset slots, NaN or garbage, into the histogram too)."""
    d = Distribution(exact=exact)
    values = [float(v) for v in range(1, 201)]
    for v in values:
        d.add(v)
    assert not d.is_exact and d.n == 200
    assert d.percentile(0) == pytest.approx(1.0, rel=0.01) and d.percentile(100) == pytest.approx(200.0, rel=0.01)
    assert d.percentile(50) == pytest.approx(100.5, rel=0.01)
    assert sum(d._pos.values()) + d._zeros + sum(d._neg.values()) == 200
