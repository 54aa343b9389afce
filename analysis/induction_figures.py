"""The induction figures: Fig. 7, the learning curves, and when induction emerges.

1. :func:`induction_vs_params`: induction success against non-embedding
   parameters (log axis), by n: the paper's Figure 7.
2. :func:`induction_curves`: test induction success against training tokens,
   from each run folder's ``eval.json`` history; one panel per size, one
   colour per n, every seed a thin line, the mean over seeds a thick one.
3. :func:`tokens_to_induction`: the training tokens at the first eval whose
   induction success reached the threshold (the run's ``milestones``), by
   size and n; every seed a marker, the mean over the runs that got there
   with its 95% interval; runs that never did sit at the top edge, marked
   "not reached", and are counted in the CSV.

Each writes ``NAME.png``, ``NAME.pdf`` and ``NAME.csv`` like the other figures.

Example:
    >>> history = [{"tokens": 1000, "metrics": {"induction_success": 0.02}},
    ...            {"tokens": 2000, "metrics": {"induction_success": 0.15}},
    ...            {"tokens": 3000, "metrics": {"induction_success": 0.40}}]
    >>> milestones_from_history(history)
    {'tokens_to_induction': 2000.0, 'tokens_to_half_best': 3000.0, 'threshold': 0.1}
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from analysis.loader import LADDER, MILESTONE
from analysis.plotkit import (
    INDUCTION,
    _caption,
    _dodge,
    _finish,
    _legend_handles,
    _percent_axis,
    _save,
    _seeds_and_means,
    _size_label,
    _sizes,
    _style,
    format_count,
    metric_label,
    n_colors,
)
from analysis.runs import read_eval
from analysis.stats import mean_interval
from lab.errors import UserError

THRESHOLD = 0.1  # the lab's induction milestone: first eval with test induction success >= 10%
TOKENS_TO_INDUCTION = "tokens_to_induction"


def milestone_threshold(frame: pd.DataFrame) -> float:
    """The induction success threshold the runs' ``tokens_to_induction`` used (``task.threshold``).

    Read from the trials' milestones (``milestone:threshold``); the lab's
    default when they do not say or disagree (then each run's own threshold
    still decided whether it reached it).

    Example:
        >>> milestone_threshold(pd.DataFrame({"milestone:threshold": [0.05, 0.05]})), milestone_threshold(pd.DataFrame())
        (0.05, 0.1)
    """
    col = MILESTONE + "threshold"
    values = set(pd.to_numeric(frame[col], errors="coerce").dropna()) if col in frame else set()
    return float(values.pop()) if len(values) == 1 else THRESHOLD


def _params_axis(ax, frame: pd.DataFrame, x: pd.Series) -> None:
    """Log x axis of non-embedding parameters, each ladder size named above it."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(format_count))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))
    sizes = _sizes(frame)
    if len(sizes) > 1:
        ax.set_xlim(x.min() / 1.6, x.max() * 1.6)
    else:
        ax.set_xlim(x.mean() / 2, x.mean() * 2)
    for size in [s for s in sizes if s in LADDER]:
        v = frame.loc[frame["size"] == size, "non_embedding"].mean()
        ax.annotate(size, (v, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8.5, color="0.3")
    ax.set_xlabel("non-embedding parameters (log scale)")


# ---------------- 1. induction success against parameters (Fig. 7) ----------------

def induction_vs_params(frame: pd.DataFrame, out_dir, *, metric: str = INDUCTION, note: str = "",
                        name: str = "induction_vs_params") -> pd.DataFrame:
    """Induction success (%) against non-embedding parameters (log axis), one colour per n.

    Every seed is a marker (nudged sideways by n so that none hides another;
    ``x_plotted`` in the CSV), the mean over seeds a line through the sizes.
    The frame's metrics are those of the checkpoint chosen upstream (by
    default the one each run selected on validation; see
    :mod:`analysis.selection`).

    Example:
        >>> import tempfile
        >>> f = pd.DataFrame({"size": ["1M"] * 2, "size_rank": [1e6] * 2, "n": [1, 1], "seed": [0, 1],
        ...                   "non_embedding": [1e6] * 2, "budget_tokens": [1e6] * 2, "induction_success": [0.1, 0.2]})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plotted = induction_vs_params(f, d)
        >>> plotted["kind"].tolist()
        ['seed', 'seed', 'mean']
    """
    if metric not in frame or frame[metric].dropna().empty:
        raise UserError(f"no '{metric}' metric in the study: cannot draw {name}")
    seeds, means = _seeds_and_means(frame, metric, ["n", "size"])
    ns = sorted(seeds["n"].unique())
    colors = n_colors(frame["n"])
    seeds["x_plotted"] = seeds["non_embedding"] * 10 ** seeds["n"].map(lambda n: _dodge(ns, n, 0.035))
    means["x_plotted"] = means["non_embedding"]
    rank = frame.groupby("size")["size_rank"].first()
    means = means.assign(_r=means["size"].map(rank)).sort_values(["n", "_r"]).drop(columns="_r")

    with _style():
        fig = Figure(figsize=(7.5, 4.8), layout="constrained")
        ax = fig.add_subplot()
        for n in ns:
            s, m = seeds[seeds["n"] == n], means[means["n"] == n]
            ax.scatter(s["x_plotted"], s["value_pct"], color=colors[n], alpha=0.75, s=38, edgecolor="white",
                       linewidth=0.6, zorder=3)
            ax.plot(m["x_plotted"], m["value_pct"], color=colors[n], lw=2.2, marker="D", ms=5.5, zorder=4)
        _params_axis(ax, frame, seeds["non_embedding"])
        ax.set_ylabel(f"{metric_label(metric, frame)} (%)")
        _percent_axis(ax, seeds["value_pct"])
        ax.legend(handles=_legend_handles(colors), loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        _finish(fig, "Induction success on 2-token names vs model size",
                _caption(frame, note, "2nd token of a name after its first mention, teacher forcing"))
    plotted = pd.concat([seeds.assign(kind="seed"), means.assign(kind="mean")], ignore_index=True)
    plotted = plotted.rename(columns={"value_pct": f"{metric}_pct"})
    cols = ["kind", "n", "size", "seed", "trial", "seeds", "non_embedding", "x_plotted", f"{metric}_pct"]
    return _save(fig, plotted[[c for c in cols if c in plotted]], out_dir, name)


# ---------------- run folders: eval histories and milestones ----------------

def milestones_from_history(history: list, *, metric: str = INDUCTION, threshold: float = THRESHOLD) -> dict:
    """The lab's induction milestones recomputed from an ``eval.json`` history (for runs that do not store them).

    ``tokens_to_induction``: tokens at the first eval whose test ``metric``
    is at least ``threshold``; ``tokens_to_half_best``: at the first eval at
    least half of the run's best. None if never (or no eval has the metric).

    Example:
        >>> milestones_from_history([{"tokens": 5, "metrics": {"induction_success": 0.01}}])
        {'tokens_to_induction': None, 'tokens_to_half_best': 5.0, 'threshold': 0.1}
    """
    points = [(float(e["tokens"]), float(e["metrics"][metric])) for e in history
              if isinstance(e, dict) and isinstance(e.get("metrics"), dict) and e["metrics"].get(metric) is not None
              and e.get("tokens") is not None]
    best = max((v for _, v in points), default=None)
    first = next((t for t, v in points if v >= threshold), None)
    half = next((t for t, v in points if best is not None and best > 0 and v >= best / 2), None)
    return {"tokens_to_induction": first, "tokens_to_half_best": half, "threshold": threshold}


def _run_keys(row: dict) -> dict:
    return {k: row.get(k) for k in ("size", "n", "seed", "trial")}


def eval_histories(frame: pd.DataFrame, run_root=None, *, metric: str = INDUCTION) -> tuple[pd.DataFrame, list[str]]:
    """Test ``metric`` (and ``valid/<metric>``) at every eval of every run, from the run folders' ``eval.json``.

    Returns the rows (``size, n, seed, trial, step, tokens, epoch, value,
    valid``) and the runs whose ``eval.json`` could not be read.

    Example:
        >>> rows, unreadable = eval_histories(pd.DataFrame({"size": ["1M"], "n": [1], "seed": [0], "trial": [0],
        ...                                                 "run_dir": ["/nonexistent"]}))
        >>> len(rows), unreadable
        (0, ['/nonexistent'])
    """
    rows, unreadable = [], []
    for row in frame.to_dict("records"):
        run_dir = row.get("run_dir")
        ev = read_eval(run_dir, run_root)
        history = ev.get("history") if ev else None
        if not isinstance(history, list):
            unreadable.append(str(run_dir) if isinstance(run_dir, str) else f"trial {row.get('trial', '?')}: no run_dir")
            continue
        for e in history:
            m = e.get("metrics") if isinstance(e, dict) else None
            if not isinstance(m, dict) or m.get(metric) is None or e.get("tokens") is None:
                continue
            rows.append({**_run_keys(row), "step": e.get("step"), "tokens": float(e["tokens"]), "epoch": e.get("epoch"),
                         "value": float(m[metric]), "valid": m.get(f"valid/{metric}")})
    cols = ["size", "n", "seed", "trial", "step", "tokens", "epoch", "value", "valid"]
    return pd.DataFrame(rows, columns=cols), unreadable


def run_milestones(frame: pd.DataFrame, run_root=None, *, name: str = TOKENS_TO_INDUCTION) -> pd.DataFrame:
    """Each run's milestone ``name`` (tokens; ``inf`` = never reached) and where it came from.

    From the trial (``milestone:<name>`` column), else the run folder's
    ``eval.json`` ``milestones``, else recomputed from its history
    (:func:`milestones_from_history`); runs with none of these are left out.

    Example:
        >>> f = pd.DataFrame({"size": ["1M"] * 2, "n": [1, 2], "seed": [0, 0], "trial": [0, 1],
        ...                   "milestone:tokens_to_induction": [float("inf"), 3e6]})
        >>> run_milestones(f)[["n", "tokens", "reached", "source"]].values.tolist()
        [[1, inf, False, 'trial'], [2, 3000000.0, True, 'trial']]
    """
    rows = []
    col = MILESTONE + name
    for row in frame.to_dict("records"):
        value, source = row.get(col), "trial"
        if value is None or (isinstance(value, float) and math.isnan(value)):
            ev = read_eval(row.get("run_dir"), run_root)
            value, source = None, None
            if ev and isinstance(ev.get("milestones"), dict) and name in ev["milestones"]:
                value, source = ev["milestones"][name], "eval.json"
            elif ev and isinstance(ev.get("history"), list) and name == TOKENS_TO_INDUCTION:
                value, source = milestones_from_history(ev["history"])[name], "history"
            if source is None:
                continue
            value = math.inf if value is None else float(value)
        extra = {k: row.get(k) for k in ("non_embedding", "budget_tokens")}
        rows.append({**_run_keys(row), **extra, "tokens": float(value), "reached": bool(np.isfinite(value)),
                     "source": source})
    cols = ["size", "n", "seed", "trial", "non_embedding", "budget_tokens", "tokens", "reached", "source"]
    return pd.DataFrame(rows, columns=cols)


def milestone_summary(milestones: pd.DataFrame) -> pd.DataFrame:
    """Per (size, n): runs, runs that reached the milestone, and the mean with its 95% interval over those.

    Example:
        >>> m = pd.DataFrame({"size": ["1M"] * 3, "n": [2] * 3, "tokens": [1e6, 3e6, float("inf")]})
        >>> milestone_summary(m)[["runs", "reached", "not_reached"]].values.tolist(), milestone_summary(m)["mean"].tolist()
        ([[3, 2, 1]], [2000000.0])
    """
    rows = []
    for (size, n), g in milestones.groupby(["size", "n"], sort=False):
        reached = g.loc[np.isfinite(g["tokens"]), "tokens"]
        mean, lo, hi, k = mean_interval(reached)
        rows.append({"size": size, "n": n, "runs": len(g), "reached": k, "not_reached": len(g) - k,
                     "mean": mean, "lo": lo, "hi": hi})
    out = pd.DataFrame(rows, columns=["size", "n", "runs", "reached", "not_reached", "mean", "lo", "hi"])
    return out.astype({"runs": int, "reached": int, "not_reached": int})


# ---------------- 2. learning curves ----------------

def induction_curves(frame: pd.DataFrame, out_dir, *, run_root=None, metric: str = INDUCTION, note: str = "",
                     threshold: float | None = None, name: str = "induction_curves") -> pd.DataFrame:
    """Test induction success (%) against training tokens: one panel per size, one colour per n.

    Every seed is a thin line, the mean over seeds (at each eval step) a
    thick one; the dotted line is the milestone threshold (default: the
    runs', :func:`milestone_threshold`). Read from the run folders'
    ``eval.json``; a UserError if none can be read.

    Example:
        >>> induction_curves(pd.DataFrame({"size": ["1M"], "n": [1], "seed": [0], "trial": [0], "run_dir": [None]}),
        ...                  "/tmp")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: no run folder with an eval.json history could be read (1 trial(s)): cannot draw induction_curves
    """
    threshold = milestone_threshold(frame) if threshold is None else threshold
    curves, _ = eval_histories(frame, run_root, metric=metric)
    if curves.empty:
        raise UserError(f"no run folder with an eval.json history could be read ({len(frame)} trial(s)): "
                        f"cannot draw {name}")
    curves["value_pct"] = 100 * curves["value"]
    sizes = [s for s in _sizes(frame) if s in set(curves["size"])]
    colors = n_colors(frame["n"])
    ncols = min(3, len(sizes))
    nrows = -(-len(sizes) // ncols)
    means = (curves.groupby(["size", "n", "step"], sort=False)
             .agg(tokens=("tokens", "mean"), value_pct=("value_pct", "mean"), seeds=("value_pct", "count"))
             .reset_index().sort_values(["size", "n", "tokens"]))
    with _style():
        fig = Figure(figsize=(4.4 * ncols + 1.8, 3.6 * nrows + 0.8), layout="constrained")
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax, size in zip(axes, sizes):
            at, mat = curves[curves["size"] == size], means[means["size"] == size]
            for (n, seed), run in at.groupby(["n", "seed"], sort=True):
                run = run.sort_values("tokens")
                ax.plot(run["tokens"], run["value_pct"], color=colors[n], lw=0.9, alpha=0.45, zorder=2)
            for n, m in mat.groupby("n", sort=True):
                ax.plot(m["tokens"], m["value_pct"], color=colors[n], lw=2.6, zorder=3)
            ax.axhline(100 * threshold, color="0.4", ls=":", lw=1.1, zorder=1)
            ax.set_title(f"size {_size_label(frame, size, long=True)}", fontsize=10.5)
            ax.set_xlabel("training tokens")
            ax.xaxis.set_major_formatter(FuncFormatter(format_count))
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        for ax in axes[len(sizes):]:
            ax.set_visible(False)
        for ax in axes[::ncols]:
            ax.set_ylabel(f"{metric_label(metric, frame)}, test (%)")
        _percent_axis(axes[0], curves["value_pct"])
        handles = _legend_handles(colors, seeds=False, mean=False) + [
            Line2D([], [], color="0.35", lw=0.9, alpha=0.6, label="one seed"),
            Line2D([], [], color="0.35", lw=2.6, label="mean over seeds"),
            Line2D([], [], color="0.4", ls=":", lw=1.1, label=f"threshold {100 * threshold:g}%\n(tokens to induction)")]
        fig.legend(handles=handles, loc="outside right center", frameon=False)
        _finish(fig, "Induction success during training", _caption(frame, note, "test set at every eval, eval.json"))
    plotted = pd.concat([curves.assign(kind="seed"), means.assign(kind="mean")], ignore_index=True)
    plotted = plotted.rename(columns={"value_pct": f"{metric}_pct"})
    cols = ["kind", "size", "n", "seed", "trial", "seeds", "step", "tokens", "epoch", f"{metric}_pct"]
    return _save(fig, plotted[[c for c in cols if c in plotted]], out_dir, name)


# ---------------- 3. tokens to induction ----------------

def tokens_to_induction(frame: pd.DataFrame, out_dir, *, run_root=None, note: str = "",
                        name: str = "tokens_to_induction") -> pd.DataFrame:
    """Training tokens until induction success first reached the threshold, against size (log params), by n.

    Every seed is a marker, the mean over the runs that reached it a diamond
    with its 95% t-interval; runs that never reached it are drawn as hollow
    triangles at the top edge ("not reached") and counted in the CSV
    (``kind=mean`` rows: ``runs``, ``runs_reached``, ``not_reached``;
    ``kind=seed`` rows: ``reached`` true or false).

    Example:
        >>> import tempfile
        >>> f = pd.DataFrame({"size": ["1M"] * 3, "size_rank": [1e6] * 3, "n": [1, 2, 2], "seed": [0, 0, 1],
        ...                   "trial": [0, 1, 2], "non_embedding": [1e6] * 3, "budget_tokens": [4e6] * 3,
        ...                   "milestone:tokens_to_induction": [float("inf"), 1e6, 2e6]})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     t = tokens_to_induction(f, d)
        >>> t[t.kind == "mean"][["n", "runs", "runs_reached", "not_reached"]].values.tolist()
        [[1, 1, 0, 1], [2, 2, 2, 0]]
        >>> t[t.kind == "mean"]["tokens"].tolist()
        [nan, 1500000.0]
    """
    threshold = milestone_threshold(frame)
    ms = run_milestones(frame, run_root)
    if ms.empty:
        raise UserError(f"no run records {TOKENS_TO_INDUCTION} (trial milestones or eval.json): cannot draw {name}")
    summary = milestone_summary(ms)
    ns = sorted(ms["n"].unique())
    colors = n_colors(frame["n"])
    spread = ms.groupby(["size", "n"]).cumcount() - (ms.groupby(["size", "n"])["n"].transform("size") - 1) / 2
    ms["x_plotted"] = ms["non_embedding"] * 10 ** (ms["n"].map(lambda n: _dodge(ns, n, 0.035)) + 0.008 * spread)
    params = frame.groupby("size")["non_embedding"].mean()
    summary["non_embedding"] = summary["size"].map(params)
    summary["x_plotted"] = summary["non_embedding"] * 10 ** summary["n"].map(lambda n: _dodge(ns, n, 0.035) * 0.4)
    reached = ms[ms["reached"]]
    budget = frame["budget_tokens"].max() if "budget_tokens" in frame else math.nan
    has_budget = not pd.isna(budget)
    top = float(np.nanmax([reached["tokens"].max() if len(reached) else math.nan,
                           summary["hi"].max() if summary["hi"].notna().any() else math.nan,
                           budget if has_budget else math.nan, 1.0]))
    with _style():
        fig = Figure(figsize=(7.8, 4.8), layout="constrained")
        ax = fig.add_subplot()
        for n in ns:
            s, m = reached[reached["n"] == n], summary[(summary["n"] == n) & (summary["reached"] > 0)]
            ax.scatter(s["x_plotted"], s["tokens"], color=colors[n], alpha=0.75, s=38, edgecolor="white",
                       linewidth=0.6, zorder=3)
            nr = ms[(ms["n"] == n) & ~ms["reached"]]
            ax.scatter(nr["x_plotted"], [0.97] * len(nr), transform=ax.get_xaxis_transform(), marker="^", s=46,
                       facecolor="none", edgecolor=colors[n], linewidth=1.4, zorder=3, clip_on=False)
            yerr = np.vstack([(m["mean"] - m["lo"]).fillna(0).clip(lower=0), (m["hi"] - m["mean"]).fillna(0)])
            ax.errorbar(m["x_plotted"], m["mean"], yerr=yerr, fmt="D", ms=6.5, color=colors[n], capsize=4, lw=1.6,
                        zorder=4)
        if has_budget:
            ax.axhline(budget, color="0.5", ls="--", lw=1, zorder=1)
        ax.set_ylim(0, top * 1.15)
        ax.axhline(top * 1.15 * 0.97, color="0.85", lw=0.8, zorder=0)
        ax.text(0.01, 0.955, "not reached", transform=ax.transAxes, fontsize=8.5, color="0.35", va="top")
        _params_axis(ax, frame, ms["non_embedding"])
        ax.yaxis.set_major_formatter(FuncFormatter(format_count))
        ax.set_ylabel(f"training tokens to induction success ≥ {100 * threshold:g}%")
        extra = [Line2D([], [], ls="", marker="^", markerfacecolor="none", color="0.35", label="one seed, not reached"),
                 Line2D([], [], ls="", marker="D", color="0.35", label="mean of the runs\nthat reached it, 95% interval")]
        if has_budget:
            extra.append(Line2D([], [], color="0.5", ls="--", lw=1, label="training budget"))
        ax.legend(handles=_legend_handles(colors, mean=False, extra=extra), loc="upper left",
                  bbox_to_anchor=(1.01, 1), frameon=False)
        missing = int(summary["not_reached"].sum())
        _finish(fig, f"When induction emerges: tokens to the first eval at ≥ {100 * threshold:g}%",
                _caption(frame, note, f"{missing} of {len(ms)} runs never reached it" if missing else ""))
    plotted = pd.concat([ms.assign(kind="seed"),
                         summary.rename(columns={"mean": "tokens", "lo": "tokens_lo", "hi": "tokens_hi",
                                                 "reached": "runs_reached"})
                         .assign(kind="mean")], ignore_index=True)
    cols = ["kind", "size", "n", "seed", "trial", "non_embedding", "x_plotted", "tokens", "tokens_lo", "tokens_hi",
            "reached", "runs", "runs_reached", "not_reached", "source"]
    return _save(fig, plotted[[c for c in cols if c in plotted]], out_dir, name)
