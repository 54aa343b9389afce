"""Summaries across seeds and the n > 1 vs n = 1 comparison.

Welch's t statistic is computed here; its p-value comes from
``scipy.stats.ttest_ind(equal_var=False)`` when scipy is importable, else from
an exact permutation test on the difference of means (every relabelling of
the pooled seeds when there are at most 20,000, else 20,000 random ones from a
fixed seed). :data:`METHOD` names the one in use, for the report.

Example:
    >>> r = welch([0.5, 0.6], [0.2, 0.3])
    >>> round(r.diff, 3), round(r.t, 3), round(r.df, 1)
    (0.3, 4.243, 2.0)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

try:  # scipy is not a dependency of the lab; use it only if some other package brought it
    from scipy import stats as _scipy_stats
except ImportError:  # pragma: no cover - depends on the environment
    _scipy_stats = None

PERMUTATIONS = 20_000
SEED = 0
METHOD = ("Welch's t-test (scipy.stats.ttest_ind, equal_var=False)" if _scipy_stats is not None else
          "Welch's t statistic; two-sided p-value from an exact permutation test on the difference of means "
          f"(all relabellings of the pooled seeds, or {PERMUTATIONS:,} random ones with seed {SEED})")


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: difference of means, its Welch standard error, t, df and p.

    ``p_min`` is the smallest p-value the permutation test could give with
    these group sizes (None with scipy); ``p`` is None when either group has
    fewer than two values.
    """

    diff: float
    se: float | None
    t: float | None
    df: float | None
    p: float | None
    p_min: float | None
    n_a: int
    n_b: int


def _welch_parts(a: np.ndarray, b: np.ndarray):
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    diff = a.mean() - b.mean()
    if se == 0:
        return diff, 0.0, (math.copysign(math.inf, diff) if diff else 0.0), math.nan
    df = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) + (vb ** 2 / (len(b) - 1) if vb else 0))
    return diff, se, diff / se, df


def permutation_p(a, b, *, permutations: int = PERMUTATIONS, seed: int = SEED) -> tuple[float, float]:
    """Two-sided permutation p-value for a difference of means, and the smallest p possible.

    Exact (every relabelling) when there are at most ``permutations`` of them.

    Example:
        >>> permutation_p([1.0, 1.1], [0.0, 0.1])
        (0.3333333333333333, 0.3333333333333333)
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled, k = np.concatenate([a, b]), len(a)
    total = math.comb(len(pooled), k)
    if total <= permutations:
        idx = np.array(list(itertools.combinations(range(len(pooled)), k)))
    else:
        rng = np.random.default_rng(seed)
        idx = np.array([rng.permutation(len(pooled))[:k] for _ in range(permutations)])
        idx = np.vstack([np.arange(k), idx])  # the observed labelling counts once
    mask = np.zeros((len(idx), len(pooled)), bool)
    np.put_along_axis(mask, idx, True, axis=1)
    sums = (mask * pooled).sum(1)
    diffs = sums / k - (pooled.sum() - sums) / (len(pooled) - k)
    observed = a.mean() - b.mean()
    eps = 1e-12 * max(1.0, np.abs(diffs).max())
    p = float(np.mean(np.abs(diffs) >= abs(observed) - eps))
    p_min = float(np.mean(np.abs(diffs) >= np.abs(diffs).max() - eps))
    return p, p_min


def welch(a, b) -> Comparison:
    """Compare two samples (e.g. the seeds of n = 2 and of n = 1 at one size).

    Example:
        >>> welch([0.5], [0.2, 0.3]).p is None
        True
    """
    a = np.asarray([x for x in a if x == x], float)
    b = np.asarray([x for x in b if x == x], float)
    if len(a) == 0 or len(b) == 0:
        return Comparison(math.nan, None, None, None, None, None, len(a), len(b))
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, None, None, None, None, None, len(a), len(b))
    diff, se, t, df = _welch_parts(a, b)
    if _scipy_stats is not None:
        p = float(_scipy_stats.ttest_ind(a, b, equal_var=False).pvalue) if se else (0.0 if diff else 1.0)
        p_min = None
    else:
        p, p_min = permutation_p(a, b)
    return Comparison(float(diff), float(se), float(t), float(df), p, p_min, len(a), len(b))


def summarize(frame: pd.DataFrame, metric: str, by=("size", "n")) -> pd.DataFrame:
    """Mean, standard deviation, min, max and number of seeds of ``metric`` per cell group.

    Groups keep the size order of the frame (``size_rank``) when it has one.

    Example:
        >>> f = pd.DataFrame({"size": ["1M"] * 3, "n": [1, 1, 2], "acc": [0.2, 0.4, 0.5]})
        >>> summarize(f, "acc").round(3).values.tolist()
        [['1M', 1, 0.3, 0.141, 0.2, 0.4, 2], ['1M', 2, 0.5, nan, 0.5, 0.5, 1]]
    """
    by = list(by)
    data = frame.dropna(subset=[metric])
    order = data.groupby(by, sort=False)["size_rank"].first() if "size_rank" in data else None
    out = data.groupby(by, sort=False)[metric].agg(mean="mean", sd="std", min="min", max="max", seeds="count")
    if order is not None:
        out = out.assign(_rank=order).sort_values(["_rank"] + by[1:]).drop(columns="_rank")
    else:
        out = out.sort_index()
    return out.reset_index()


def gains(frame: pd.DataFrame, metric: str, baseline_n: int = 1) -> pd.DataFrame:
    """Per size and each n != baseline: mean difference to the baseline n, Welch s.e., t, df, p.

    Example:
        >>> f = pd.DataFrame({"size": ["1M"] * 4, "n": [1, 1, 2, 2], "acc": [0.2, 0.3, 0.5, 0.6]})
        >>> gains(f, "acc")[["size", "n", "gain", "seeds", "seeds_baseline"]].round(3).values.tolist()
        [['1M', 2, 0.3, 2, 2]]
    """
    rows = []
    data = frame.dropna(subset=[metric])
    sizes = data.groupby("size", sort=False)["size_rank"].first().sort_values().index if "size_rank" in data \
        else sorted(data["size"].unique())
    for size in sizes:
        at = data[data["size"] == size]
        base = at.loc[at["n"] == baseline_n, metric].to_numpy()
        if len(base) == 0:
            continue
        for n in sorted(set(at["n"]) - {baseline_n}):
            c = welch(at.loc[at["n"] == n, metric].to_numpy(), base)
            rows.append({"size": size, "n": n, "gain": c.diff, "se": c.se, "t": c.t, "df": c.df, "p": c.p,
                         "p_min": c.p_min, "seeds": c.n_a, "seeds_baseline": c.n_b})
    return pd.DataFrame(rows, columns=["size", "n", "gain", "se", "t", "df", "p", "p_min", "seeds", "seeds_baseline"])
