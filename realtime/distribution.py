"""Statistics of a run in memory that does not grow with its length: an hour at 24 fps is 86,400 frames,
and a summary that kept every frame's numbers grew by about 1.3 KB a frame (110 MB an hour).

* :class:`Distribution`: n, mean, std, min and max of a stream of numbers exactly; its percentiles
  exact (``numpy.percentile``, linear) for the first ``exact`` values, then from a log-spaced
  histogram whose bins are ``relative_accuracy`` wide (a percentile is then within that fraction of
  the exact one: 0.5 % by default; DDSketch's scheme). Memory: at most ``exact`` floats, then a
  few thousand bin counts whatever the length.
* :class:`DecimatedSeries`: columns of a time series for a plot, at most ``capacity`` points: when
  full, every second point is dropped and from then on one point in two is kept (the stride doubles),
  so the points stay evenly spread over the whole run.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def latency_stats(values_ms: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """p50/p90/p95/p99/max/mean/std of a list of milliseconds (NaNs ignored; None when empty)."""
    v = np.asarray(values_ms, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {**{f"p{p}": None for p in PERCENTILES}, "max": None, "mean": None, "std": None, "n": 0}
    out = {f"p{p}": float(np.percentile(v, p)) for p in PERCENTILES}
    out.update(max=float(v.max()), mean=float(v.mean()), std=float(v.std()), n=int(v.size))
    return out


class Distribution:
    """Running statistics of numbers (``None`` and non-finite values are ignored), in bounded memory
    (the module docstring says how percentiles stay accurate)."""

    def __init__(self, exact: int = 4096, relative_accuracy: float = 0.005) -> None:
        if exact < 1 or not 0 < relative_accuracy < 1:
            raise ValueError("exact must be >= 1 and relative_accuracy in (0, 1)")
        self.exact = exact
        self.relative_accuracy = relative_accuracy
        self._log_gamma = math.log((1 + relative_accuracy) / (1 - relative_accuracy))
        self.n = 0
        self.min = math.inf
        self.max = -math.inf
        self._mean = 0.0
        self._m2 = 0.0
        self._buf: np.ndarray | None = np.empty(min(64, exact), dtype=np.float64)
        self._pos: dict[int, int] = {}
        self._neg: dict[int, int] = {}
        self._zeros = 0

    @property
    def is_exact(self) -> bool:
        """Whether every value is still kept (percentiles exact)."""
        return self._buf is not None

    def add(self, x: float | None) -> None:
        if x is None:
            return
        x = float(x)
        if not math.isfinite(x):
            return
        self.n += 1
        delta = x - self._mean  # Welford: mean and variance without keeping the values
        self._mean += delta / self.n
        self._m2 += delta * (x - self._mean)
        self.min = min(self.min, x)
        self.max = max(self.max, x)
        if self._buf is not None:
            if self.n > self.exact:
                self._to_bins()
            else:
                if self.n > self._buf.size:
                    self._buf = np.resize(self._buf, min(self.exact, 2 * self._buf.size))
                self._buf[self.n - 1] = x
                return
        self._bin(x)

    def extend(self, values: Iterable[float | None]) -> None:
        for x in values:
            self.add(x)

    def values(self) -> np.ndarray:
        """Every value, in the order added (only while :attr:`is_exact`)."""
        if self._buf is None:
            raise ValueError("the values are no longer kept (more than `exact` were added)")
        return self._buf[:self.n].copy()

    @property
    def mean(self) -> float | None:
        return self._mean if self.n else None

    @property
    def std(self) -> float | None:
        return math.sqrt(self._m2 / self.n) if self.n else None

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (linear interpolation between ranks, as ``numpy.percentile``)."""
        if self.n == 0:
            return None
        if self._buf is not None:
            return float(np.percentile(self._buf[:self.n], p))
        rank = p / 100.0 * (self.n - 1)
        lo, hi = math.floor(rank), math.ceil(rank)
        a, b = self._at_rank(lo), self._at_rank(hi)
        return a + (b - a) * (rank - lo)

    def stats(self) -> dict[str, float | None]:
        """p50/p90/p95/p99, max, mean, std and n (:func:`latency_stats`' keys)."""
        if self._buf is not None:
            return latency_stats(self._buf[:self.n])
        out = {f"p{p}": self.percentile(p) for p in PERCENTILES}
        out.update(max=self.max, mean=self.mean, std=self.std, n=self.n)
        return out

    def min_median_max(self) -> dict[str, float | None]:
        if self.n == 0:
            return {"min": None, "median": None, "max": None}
        return {"min": self.min, "median": self.percentile(50), "max": self.max}

    def median_p95_max(self) -> dict[str, float | int | None]:
        """``{n, median, p95, max}`` (the frame-to-frame change summaries of :mod:`realtime.temporal`)."""
        if self.n == 0:
            return {"n": 0, "median": None, "p95": None, "max": None}
        return {"n": self.n, "median": self.percentile(50), "p95": self.percentile(95), "max": self.max}

    # ---------------------------------------------------------------------------------- histogram
    def _to_bins(self) -> None:
        values, self._buf = self._buf, None
        for x in values[:self.n - 1]:  # the values kept (the one being added is binned by the caller)
            self._bin(float(x))

    def _bin(self, x: float) -> None:
        if x == 0.0:
            self._zeros += 1
            return
        bins = self._pos if x > 0 else self._neg
        key = math.ceil(math.log(abs(x)) / self._log_gamma)
        bins[key] = bins.get(key, 0) + 1

    def _value(self, key: int) -> float:
        gamma = math.exp(self._log_gamma)
        return 2.0 * math.exp(key * self._log_gamma) / (gamma + 1.0)

    def _at_rank(self, rank: int) -> float:
        if rank <= 0:
            return self.min
        if rank >= self.n - 1:
            return self.max
        seen = 0
        for key in sorted(self._neg, reverse=True):  # most negative first
            seen += self._neg[key]
            if seen > rank:
                return min(max(-self._value(key), self.min), self.max)
        seen += self._zeros
        if seen > rank:
            return 0.0
        for key in sorted(self._pos):
            seen += self._pos[key]
            if seen > rank:
                return min(max(self._value(key), self.min), self.max)
        return self.max


class DecimatedSeries:
    """Named float columns of a time series, at most ``capacity`` rows kept, evenly spread over the run
    (the module docstring says how). ``None`` is stored as NaN."""

    def __init__(self, columns: Sequence[str], capacity: int = 4096) -> None:
        if capacity < 2 or capacity % 2:
            raise ValueError("capacity must be an even number >= 2")
        self.columns = tuple(columns)
        self.capacity = capacity
        self.stride = 1
        self.seen = 0
        self._n = 0
        self._data = np.full((len(self.columns), capacity), np.nan)

    def __len__(self) -> int:
        return self._n

    def add(self, *values: float | None) -> None:
        """One row, the columns' values in order."""
        index, self.seen = self.seen, self.seen + 1
        if index % self.stride:
            return
        if self._n == self.capacity:
            half = self.capacity // 2
            self._data[:, :half] = self._data[:, 0:self.capacity:2]
            self._data[:, half:] = np.nan
            self._n = half
            self.stride *= 2
            if index % self.stride:
                return
        self._data[:, self._n] = [math.nan if v is None else float(v) for v in values]
        self._n += 1

    def column(self, name: str) -> np.ndarray:
        """The kept values of one column (a copy)."""
        return self._data[self.columns.index(name), :self._n].copy()
