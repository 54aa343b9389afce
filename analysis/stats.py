"""Summaries across seeds and the n > 1 vs n = 1 comparison, without scipy.

Across the seeds of one cell group: the mean and its 95% t-interval
(``mean ± t(0.975, k-1) · sd / sqrt(k)``; none with one seed). Between two
groups (n > 1 against n = 1 at one size): Welch's t-test, i.e. the
difference of means, its 95% interval and a two-sided p-value from Student's
t distribution with the Welch-Satterthwaite degrees of freedom, plus an
exact permutation p-value on the difference of means (every relabelling of
the pooled seeds when there are at most 20,000, else 20,000 random ones from
a fixed seed), which assumes no normality. The t distribution is computed
here (regularized incomplete beta function by continued fraction; quantiles
by bisection), so scipy is not needed. :data:`METHOD` names the method, for
the report.

Example:
    >>> r = welch([0.5, 0.6], [0.2, 0.3])
    >>> round(r.diff, 3), round(r.t, 3), round(r.df, 1), [round(x, 3) for x in (r.lo, r.hi)]
    (0.3, 4.243, 2.0, [-0.004, 0.604])
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

PERMUTATIONS = 20_000
SEED = 0
LEVEL = 0.95
METHOD = ("Welch's t-test: the difference of seed means, its 95% interval and a two-sided p-value from Student's t "
          "distribution with Welch-Satterthwaite degrees of freedom; beside it an exact permutation p-value on the "
          f"difference of means (every relabelling of the pooled seeds, or {PERMUTATIONS:,} random ones with seed "
          f"{SEED} when there are more), which does not assume normality")


# ---------------- Student's t distribution ----------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b).

    Example:
        >>> round(betainc(2, 3, 0.4), 6)  # 1 - (1-x)^4 - 4x(1-x)^3 ... = 0.5248
        0.5248
    """
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| >= |t|) of Student's t with ``df`` degrees of freedom (any df > 0).

    Example:
        >>> round(t_sf2(2.0, 10), 4), round(t_sf2(1.96, math.inf), 4)
        (0.0734, 0.05)
    """
    t = abs(t)
    if math.isinf(t):
        return 0.0
    if math.isinf(df) or df > 1e7:
        return math.erfc(t / math.sqrt(2))
    return betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_sf2`).

    Example:
        >>> [round(t_quantile(0.975, df), 3) for df in (1, 2, 3, 10, math.inf)]
        [12.706, 4.303, 3.182, 2.228, 1.96]
    """
    if not 0 < q < 1:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    tail = 2 * (1 - q) if q > 0.5 else 2 * q  # two-sided tail at |t|
    lo, hi = 0.0, 1.0
    while t_sf2(hi, df) > tail:
        hi *= 2
        if hi > 1e12:
            break
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf2(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    t = (lo + hi) / 2
    return t if q > 0.5 else -t


# ---------------- one group: mean and its interval ----------------

def mean_interval(values, level: float = LEVEL) -> tuple[float, float, float, int]:
    """(mean, low, high, k): the t-interval of the mean of ``k`` values; low/high are NaN with one value.

    NaNs are dropped.

    Example:
        >>> [round(x, 3) for x in mean_interval([0.2, 0.4])]
        [0.3, -0.971, 1.571, 2]
        >>> mean_interval([0.5])
        (0.5, nan, nan, 1)
    """
    v = np.asarray([x for x in values if not pd.isna(x)], float)
    k = len(v)
    if k == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if k < 2:
        return mean, math.nan, math.nan, k
    half = t_quantile(0.5 + level / 2, k - 1) * float(v.std(ddof=1)) / math.sqrt(k)
    return mean, mean - half, mean + half, k


# ---------------- two groups: Welch ----------------

@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: difference of means, Welch s.e., t, df, 95% interval, p-values.

    ``p`` is Welch's two-sided p-value (it is below 0.05 exactly when the
    interval excludes 0); ``p_perm`` the exact permutation p-value and
    ``p_min`` the smallest one the permutation test could give with these
    group sizes. All but ``diff`` are None when either group has fewer than
    two values.
    """

    diff: float
    se: float | None
    t: float | None
    df: float | None
    p: float | None
    p_min: float | None
    n_a: int
    n_b: int
    lo: float | None = None
    hi: float | None = None
    p_perm: float | None = None

    @property
    def resolved(self) -> bool:
        """Whether the 95% interval of the difference excludes 0."""
        return self.lo is not None and (self.lo > 0 or self.hi < 0)


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


def welch(a, b, level: float = LEVEL) -> Comparison:
    """Compare two samples (e.g. the seeds of n = 2 and of n = 1 at one size).

    Example:
        >>> welch([0.5], [0.2, 0.3]).p is None
        True
        >>> r = welch([0.50, 0.52, 0.51], [0.20, 0.22, 0.21])
        >>> r.resolved, r.p < 1e-4, round(r.p_perm, 2), round(r.p_min, 2)
        (True, True, 0.1, 0.1)
    """
    a = np.asarray([x for x in a if not pd.isna(x)], float)
    b = np.asarray([x for x in b if not pd.isna(x)], float)
    if len(a) == 0 or len(b) == 0:
        return Comparison(math.nan, None, None, None, None, None, len(a), len(b))
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, None, None, None, None, None, len(a), len(b))
    diff, se, t, df = _welch_parts(a, b)
    if se == 0:  # no spread at all: the difference is what it is
        lo = hi = float(diff)
        p = 0.0 if diff else 1.0
    else:
        half = t_quantile(0.5 + level / 2, df) * se
        lo, hi, p = float(diff - half), float(diff + half), t_sf2(t, df)
    p_perm, p_min = permutation_p(a, b)
    return Comparison(float(diff), float(se), float(t), float(df), float(p), p_min, len(a), len(b), lo, hi, p_perm)


# ---------------- tables ----------------

def _ordered(frame: pd.DataFrame, out: pd.DataFrame, by: list) -> pd.DataFrame:
    """``out`` (indexed by ``by``) sorted by size rank, then the other keys."""
    if "size_rank" in frame and "size" in by:
        rank = frame.groupby("size", sort=False)["size_rank"].first()
        out = out.reset_index()
        out = out.assign(_rank=out["size"].map(rank)).sort_values(["_rank"] + [b for b in by if b != "size"],
                                                                  kind="stable").drop(columns="_rank")
        return out.reset_index(drop=True)
    return out.sort_index().reset_index()


def summarize(frame: pd.DataFrame, metric: str, by=("size", "n"), level: float = LEVEL) -> pd.DataFrame:
    """Mean, 95% interval (``lo``, ``hi``), sd, min, max and number of seeds of ``metric`` per cell group.

    Groups keep the size order of the frame (``size_rank``) when it has one;
    ``by`` keys missing from the frame are left out.

    Example:
        >>> f = pd.DataFrame({"size": ["1M"] * 3, "n": [1, 1, 2], "acc": [0.2, 0.4, 0.5]})
        >>> summarize(f, "acc").round(3).values.tolist()
        [['1M', 1, 0.3, -0.971, 1.571, 0.141, 0.2, 0.4, 2], ['1M', 2, 0.5, nan, nan, nan, 0.5, 0.5, 1]]
    """
    by = [b for b in by if b in frame]
    data = frame.dropna(subset=[metric])
    rows = []
    for key, g in data.groupby(by, sort=False):
        mean, lo, hi, k = mean_interval(g[metric], level)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "mean": mean, "lo": lo, "hi": hi,
                     "sd": g[metric].std(), "min": g[metric].min(), "max": g[metric].max(), "seeds": k})
    cols = by + ["mean", "lo", "hi", "sd", "min", "max", "seeds"]
    if not rows:
        return pd.DataFrame(columns=cols)
    return _ordered(data, pd.DataFrame(rows, columns=cols).set_index(by), by)


GAIN_COLUMNS = ["gain", "lo", "hi", "se", "t", "df", "p", "p_perm", "p_min", "seeds", "seeds_baseline", "resolved"]


def gains(frame: pd.DataFrame, metric: str, baseline_n: int = 1, within=("size",), level: float = LEVEL) -> pd.DataFrame:
    """Per size (and any other ``within`` key) and each n != baseline: Welch comparison with the baseline n.

    Columns: the ``within`` keys, ``n``, then ``gain`` (difference of means),
    ``lo``/``hi`` (its 95% interval), ``se``, ``t``, ``df``, ``p`` (Welch),
    ``p_perm``/``p_min`` (permutation), ``seeds``, ``seeds_baseline`` and
    ``resolved`` (the interval excludes 0).

    Example:
        >>> f = pd.DataFrame({"size": ["1M"] * 4, "n": [1, 1, 2, 2], "acc": [0.2, 0.3, 0.5, 0.6]})
        >>> gains(f, "acc")[["size", "n", "gain", "seeds", "seeds_baseline", "resolved"]].round(3).values.tolist()
        [['1M', 2, 0.3, 2, 2, False]]
    """
    within = [w for w in within if w in frame]
    data = frame.dropna(subset=[metric])
    rows = []
    for key, at in data.groupby(within, sort=False, dropna=False) if within else [((), data)]:
        base = at.loc[at["n"] == baseline_n, metric].to_numpy()
        if len(base) == 0:
            continue
        key = key if isinstance(key, tuple) else (key,)
        for n in sorted(set(at["n"]) - {baseline_n}):
            c = welch(at.loc[at["n"] == n, metric].to_numpy(), base, level)
            rows.append({**dict(zip(within, key)), "n": n, "gain": c.diff, "lo": c.lo, "hi": c.hi, "se": c.se,
                         "t": c.t, "df": c.df, "p": c.p, "p_perm": c.p_perm, "p_min": c.p_min, "seeds": c.n_a,
                         "seeds_baseline": c.n_b, "resolved": c.resolved})
    cols = within + ["n"] + GAIN_COLUMNS
    if not rows:
        return pd.DataFrame(columns=cols)
    return _ordered(data, pd.DataFrame(rows, columns=cols).set_index(within + ["n"]), within + ["n"])


def verdict(row) -> str:
    """A plain sentence for one row of :func:`gains`.

    Example:
        >>> verdict({"n": 2, "lo": 0.01, "hi": 0.2, "p": 0.03, "seeds": 3, "seeds_baseline": 3})
        'resolved: n = 2 is higher'
        >>> verdict({"n": 2, "lo": -0.1, "hi": 0.2, "p": 0.4, "seeds": 2, "seeds_baseline": 2})
        'not resolved at this power (2 seeds each)'
        >>> verdict({"n": 4, "lo": None, "hi": None, "p": None, "seeds": 1, "seeds_baseline": 2})
        'not tested (1 / 2 seeds; needs 2 each)'
    """
    a, b = int(row["seeds"]), int(row["seeds_baseline"])
    seeds = f"{a} seeds each" if a == b else f"{a} / {b} seeds"
    if row["p"] is None or pd.isna(row["p"]) or row["lo"] is None or pd.isna(row["lo"]):
        return f"not tested ({a} / {b} seeds; needs 2 each)"
    if row["lo"] > 0:
        return f"resolved: n = {int(row['n'])} is higher"
    if row["hi"] < 0:
        return f"resolved: n = {int(row['n'])} is lower"
    return f"not resolved at this power ({seeds})"
