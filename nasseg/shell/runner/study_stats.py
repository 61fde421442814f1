"""Does one candidate group beat another? A two-level bootstrap of the difference of their mean mIoU.

A group's candidates are architectures (one per search seed, one per random draw) or a single
baseline model, each trained once per retraining seed. Its mean mIoU is the mean over its
candidates of each candidate's mean over its retraining runs. The difference A − B of two groups
is resampled at both levels of this nesting (a hierarchical bootstrap): the candidates
with replacement, then each drawn candidate's retraining runs with replacement, ``samples`` times;
the ``confidence`` interval is the percentile interval of the resampled differences. Groups that
belong together by search seed (the stop rule's and the last epoch's architecture of the same
search) are resampled *paired*: the same seeds drawn for both, the difference taken per seed.
Candidates that train the same network (same retraining runs) share their resampled means.

Why a bootstrap and not a t-test: a study has few candidates (3 search seeds, 5 random draws), the
mIoU of architectures is not normal, and two sources of spread (which architecture, which
training seed) are nested; the bootstrap assumes none of this away. Its limit, stated with every
result: with n candidates there are only C(2n - 1, n) distinct resamples (10 for n = 3), and the
percentile interval of so few is too narrow; read an interval from 3 seeds as a lower bound on the
uncertainty. "A beats B" means the whole interval lies above 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    paired: bool
    difference: float  # observed mean(A) − mean(B)
    low: float  # the percentile interval of the resampled difference
    high: float
    share_above: float  # share of resampled differences > 0
    candidates: tuple[int, int]
    verdict: str  # for A against B: beats | worse | no clear difference | too few runs


def group_mean(units: Sequence[str], runs: Mapping[str, Sequence[float]]) -> float:
    """Mean over a group's candidates (their units) of each one's mean over its retraining runs."""
    return float(np.mean([np.mean(runs[u]) for u in units]))


def resampled_unit_means(runs: Mapping[str, Sequence[float]], samples: int, seed: int) -> dict[str, np.ndarray]:
    """Per unit, ``samples`` means of its runs drawn with replacement (units in sorted order, so the
    draws depend on the seed and the units alone)."""
    rng = np.random.default_rng([seed, 0])
    means = {}
    for unit in sorted(runs):
        values = np.asarray(runs[unit], dtype=np.float64)
        means[unit] = values[rng.integers(len(values), size=(samples, len(values)))].mean(axis=1)
    return means


def compare(a: Sequence[str], b: Sequence[str], runs: Mapping[str, Sequence[float]], *, paired: bool = False,
            samples: int = 10_000, confidence: float = 0.95, seed: int = 0, stream: int = 1,
            names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Group A (its candidates' units, in candidate order) against group B. ``paired``: A[i] and
    B[i] belong together (the same search seed). ``stream`` separates the draws of several
    comparisons made with one seed. The result is a pure function of its arguments."""
    if paired and len(a) != len(b):
        raise ValueError(f"paired groups need as many candidates: {len(a)} vs {len(b)}")
    observed = group_mean(a, runs) - group_mean(b, runs)
    if any(len(group) < 2 and sum(len(runs[u]) for u in group) < 2 for group in (a, b)):
        return Comparison(*names, paired, observed, float("nan"), float("nan"), float("nan"), (len(a), len(b)),
                          "too few runs")
    means = resampled_unit_means({u: runs[u] for u in {*a, *b}}, samples, seed)
    rng = np.random.default_rng([seed, stream])
    columns = np.arange(samples)[:, None]

    def drawn(units: Sequence[str], picks: np.ndarray) -> np.ndarray:
        table = np.stack([means[u] for u in units])  # (candidates, samples)
        return table[picks, columns]  # (samples, candidates)

    picks_a = rng.integers(len(a), size=(samples, len(a)))
    picks_b = picks_a if paired else rng.integers(len(b), size=(samples, len(b)))
    differences = drawn(a, picks_a).mean(axis=1) - drawn(b, picks_b).mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(differences, [tail, 1 - tail]))
    verdict = "beats" if low > 0 else "worse" if high < 0 else "no clear difference"
    return Comparison(*names, paired, observed, low, high, float((differences > 0).mean()), (len(a), len(b)), verdict)
