"""The study's figures, drawn the way the paper draws them.

One function per figure. Each takes the loaded frame (see
:mod:`analysis.loader`), writes ``NAME.png``, ``NAME.pdf`` and ``NAME.csv``
(exactly the numbers drawn) into ``out_dir``, and returns that DataFrame.
Accuracies are drawn in percent, gains in percentage points; every seed is a
marker and the mean over seeds a line; one colour per n throughout. The
caption under each figure states the training budget against the paper's.

1. :func:`analysis.induction_figures.induction_vs_params`: induction success against non-embedding
   parameters (Fig. 7); the induction figures live in :mod:`analysis.induction_figures`.
2. :func:`accuracy_vs_difficulty`: accuracy against the task's difficulty (polyarith: the number of
   operations m, Figs. 8, S16), a panel per size, the out-of-domain values shaded.
3. :func:`accuracy_vs_size`: in-domain and out-of-domain accuracy against size.
4. :func:`training_curves`: loss and top-1 accuracy of each head against tokens, from the run folders.
5. :func:`gain_over_ntp`: the gain of each n > 1 over n = 1 at each size, with its 95% interval.

:func:`analysis.draw.draw_all` picks the figures that fit a study's metrics.

Example:
    >>> import tempfile
    >>> f = pd.DataFrame({"size": ["1M", "1M"], "size_rank": [1e6, 1e6], "n": [1, 2], "seed": [0, 0],
    ...                   "budget_tokens": [3e6, 3e6], "accuracy/in_domain": [0.1, 0.3]})
    >>> with tempfile.TemporaryDirectory() as d:
    ...     plotted = accuracy_vs_size(f, d)
    >>> plotted[plotted.kind == "mean"][["n", "accuracy_pct"]].values.tolist()
    [[1, 10.0], [2, 30.0]]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from analysis import paper
from analysis.induction_figures import induction_vs_params  # noqa: F401  (figures.induction_vs_params, as before)
from analysis.plotkit import (  # noqa: F401
    IN_DOMAIN,
    INDUCTION,
    OOD,
    OPS,
    SIZE_AXIS,
    _caption,
    _dodge,
    _finish,
    _legend_handles,
    _panel_width,
    _percent_axis,
    _save,
    _seeds_and_means,
    _size_label,
    _sizes,
    _style,
    _train_max_ops,
    budget_caption,
    file_name,
    format_count,
    metric_label,
    n_colors,
    ops_columns,
    task_title,
)
from analysis.runs import read_run_metrics
from analysis.taskmeta import TaskMeta
from analysis.stats import gains
from lab.errors import UserError


def _title(frame: pd.DataFrame, what: str, meta: TaskMeta | None = None) -> str:
    if meta is not None:
        return f"{meta.title}: {what}"
    tasks = frame["task"].dropna() if "task" in frame else pd.Series(dtype=str)
    return f"{task_title(str(tasks.mode().iloc[0]))}: {what}" if len(tasks) else what[:1].upper() + what[1:]


# ---------------- 2. accuracy against difficulty (the number of operations m: Figs. 8, S16) ----------------


def accuracy_vs_difficulty(frame: pd.DataFrame, out_dir, *, meta: TaskMeta | None = None, show_paper: bool = True,
                           note: str = "", name: str = "") -> pd.DataFrame:
    """Exact-match accuracy (%) against the task's difficulty, one panel per size, one colour per n.

    The task's metadata (``meta``, :class:`analysis.taskmeta.TaskMeta`; from
    the frame's ``accuracy/ops=m`` slices when not given) names the title, the
    axis, the slices drawn and the out-of-domain values, which are shaded.
    On a polyarith 100M panel the paper's Fig. 8 readings are drawn as dashed
    lines (``show_paper``); the CSV marks them ``kind=paper``. ``name``
    defaults to the task's figure name (``accuracy_vs_ops``, ``accuracy_vs_length``).

    Example:
        >>> import tempfile
        >>> f = pd.DataFrame({"size": ["1M"], "size_rank": [1e6], "n": [1], "seed": [0], "budget_tokens": [1e6],
        ...                   "accuracy/ops=1": [0.5], "accuracy/ops=6": [0.1]})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plotted = accuracy_vs_difficulty(f, d)
        >>> plotted[["kind", "m", "region", "accuracy_pct"]].values.tolist()[-2:]
        [['mean', 1, 'in-domain', 50.0], ['mean', 6, 'out-of-domain', 10.0]]
    """
    meta = meta or TaskMeta.from_frame(frame)
    name = name or meta.figure or "accuracy_vs_difficulty"
    cols = meta.columns(frame)
    if not cols:
        raise UserError(f"no {meta.prefix or 'difficulty'}=VALUE metrics in the study: cannot draw {name}")
    keep = [c for c in ("trial", "size", "size_rank", "n", "seed") if c in frame]
    long = frame[keep + list(cols.values())].melt(id_vars=keep, var_name="metric", value_name="accuracy").dropna(
        subset=["accuracy"])
    value_of = {c: v for v, c in cols.items()}
    long["m"] = long["metric"].map(value_of)
    long["accuracy_pct"] = 100 * long["accuracy"]
    long["region"] = long["m"].map(meta.region)
    sizes, ns, colors = _sizes(frame), sorted(frame["n"].unique()), n_colors(frame["n"])
    long["m_plotted"] = long["m"] + long["n"].map(lambda n: _dodge(ns, n, 0.12))
    means = long.groupby(["size", "n", "m"], sort=False).agg(
        accuracy_pct=("accuracy_pct", "mean"), seeds=("accuracy_pct", "count")).reset_index()
    means["region"] = means["m"].map(meta.region)
    means["m_plotted"] = means["m"]
    refs = []
    if show_paper and "100M" in sizes and meta.prefix == "accuracy/ops":  # the paper's Fig. 8 is polyarith's
        for m in cols:
            for n in ns:
                ref = paper.polyarith_reference(m, n)
                if ref is not None:
                    refs.append({"size": "100M", "n": n, "m": m, "m_plotted": m, "accuracy_pct": ref,
                                 "region": meta.region(m)})
    refs = pd.DataFrame(refs)
    m_min, m_max = min(cols), max(cols)
    ood = [m for m in cols if meta.region(m) == "out-of-domain"]
    ood_from = min(ood) - 0.5 if ood else m_max + 0.5

    ncols = min(3, len(sizes))
    nrows = -(-len(sizes) // ncols)
    with _style():
        fig = Figure(figsize=(4.6 * ncols + 1.6, 3.9 * nrows + 0.6), layout="constrained")
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax, size in zip(axes, sizes):
            ax.axvspan(ood_from, m_max + 0.5, color="0.88", zorder=0, lw=0)
            ax.text((m_min - 0.5 + ood_from) / 2, 0.97, "in-domain", transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=9, color="0.35")
            if ood:
                ax.text((ood_from + m_max + 0.5) / 2, 0.97, "out-of-domain", transform=ax.get_xaxis_transform(),
                        ha="center", va="top", fontsize=9, color="0.35")
            for n in ns:
                s = long[(long["size"] == size) & (long["n"] == n)]
                m = means[(means["size"] == size) & (means["n"] == n)].sort_values("m")
                ax.scatter(s["m_plotted"], s["accuracy_pct"], color=colors[n], s=22, alpha=0.7, edgecolor="white",
                           linewidth=0.5, zorder=3)
                ax.plot(m["m"], m["accuracy_pct"], color=colors[n], lw=2, marker="D", ms=4.5, zorder=4)
                if len(refs):
                    r = refs[(refs["size"] == size) & (refs["n"] == n)].sort_values("m")
                    ax.plot(r["m"], r["accuracy_pct"], color=colors[n], lw=1.3, ls="--", alpha=0.8, zorder=2)
            ax.set_title(f"size {_size_label(frame, size, long=True)}", fontsize=10.5)
            ax.set_xlim(m_min - 0.5, m_max + 0.5)
            ax.set_xticks(list(cols))
            ax.set_xlabel(meta.axis)
            ax.grid(axis="x", visible=False)
        for ax in axes[len(sizes):]:
            ax.set_visible(False)
        for ax in axes[::ncols]:
            ax.set_ylabel("exact-match accuracy (%)")
        _percent_axis(axes[0], pd.concat([long["accuracy_pct"], refs.get("accuracy_pct", pd.Series(dtype=float))]))
        key = meta.axis.split()[-1]
        bound = f"{key} > {max(meta.in_domain)}" if meta.in_domain else f"{key} ≥ {min(ood)}" if ood else ""
        extra = [Patch(color="0.88", label=f"out-of-domain\n({bound})")] if ood else []
        if len(refs):
            extra.insert(0, Line2D([], [], color="0.35", ls="--", lw=1.3, label="paper, 100M (Fig. 8)"))
        fig.legend(handles=_legend_handles(colors, extra=extra), loc="outside right center", frameon=False)
        _finish(fig, _title(frame, f"accuracy vs {meta.axis}", meta), _caption(frame, note))
    plotted = pd.concat([long.assign(kind="seed"), means.assign(kind="mean")]
                        + ([refs.assign(kind="paper")] if len(refs) else []), ignore_index=True)
    cols_out = ["kind", "size", "n", "seed", "trial", "seeds", "m", "m_plotted", "region", "accuracy_pct"]
    return _save(fig, plotted[[c for c in cols_out if c in plotted]], out_dir, name)


# ---------------- 3. in-domain and out-of-domain accuracy against size ----------------

def accuracy_vs_size(frame: pd.DataFrame, out_dir, *, metrics=(IN_DOMAIN, OOD), meta: TaskMeta | None = None,
                     note: str = "", name: str = "accuracy_vs_size") -> pd.DataFrame:
    """In-domain and out-of-domain accuracy (%) against model size, one panel per metric, one colour per n.

    Sizes sit at even steps in ladder order, labelled with their non-embedding
    parameter count.

    Example:
        >>> import tempfile
        >>> f = pd.DataFrame({"size": ["1M", "3M"], "size_rank": [1e6, 3e6], "n": [1, 1], "seed": [0, 0],
        ...                   "non_embedding": [1e6, 3e6], "budget_tokens": [1e6] * 2,
        ...                   "accuracy/in_domain": [0.2, 0.4], "accuracy/ood": [0.0, 0.1]})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plotted = accuracy_vs_size(f, d)
        >>> plotted.query("kind == 'mean'")["accuracy_pct"].tolist()
        [20.0, 40.0, 0.0, 10.0]
    """
    metrics = [m for m in metrics if m in frame and frame[m].notna().any()]
    if not metrics:
        raise UserError(f"no in-domain/out-of-domain accuracy in the study: cannot draw {name}")
    sizes, ns, colors = _sizes(frame), sorted(frame["n"].unique()), n_colors(frame["n"])
    pos = {s: i for i, s in enumerate(sizes)}
    parts = []
    with _style():
        fig = Figure(figsize=(_panel_width(len(sizes)) * len(metrics) + 1.6, 4.4), layout="constrained")
        axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False).ravel()
        for ax, metric in zip(axes, metrics):
            seeds, means = _seeds_and_means(frame, metric, ["n", "size"])
            seeds["x_plotted"] = seeds["size"].map(pos) + seeds["n"].map(lambda n: _dodge(ns, n, 0.09))
            means["x_plotted"] = means["size"].map(pos)
            means = means.sort_values(["n", "x_plotted"])
            for n in ns:
                s, m = seeds[seeds["n"] == n], means[means["n"] == n]
                ax.scatter(s["x_plotted"], s["value_pct"], color=colors[n], s=34, alpha=0.75, edgecolor="white",
                           linewidth=0.6, zorder=3)
                ax.plot(m["x_plotted"], m["value_pct"], color=colors[n], lw=2.2, marker="D", ms=5.5, zorder=4)
            ax.set_xticks(range(len(sizes)), [_size_label(frame, s) for s in sizes])
            ax.set_xlim(-0.5, len(sizes) - 0.5)
            ax.set_xlabel(SIZE_AXIS)
            ax.set_title(metric_label(metric, frame, meta), fontsize=10.5)
            ax.grid(axis="x", visible=False)
            parts += [seeds.assign(kind="seed", metric=metric), means.assign(kind="mean", metric=metric)]
        plotted = pd.concat(parts, ignore_index=True)
        axes[0].set_ylabel("exact-match accuracy (%)")
        _percent_axis(axes[0], plotted["value_pct"])
        fig.legend(handles=_legend_handles(colors), loc="outside right center", frameon=False)
        _finish(fig, _title(frame, "accuracy vs model size", meta), _caption(frame, note))
    plotted = plotted.rename(columns={"value_pct": "accuracy_pct"})
    cols = ["kind", "metric", "size", "n", "seed", "trial", "seeds", "non_embedding", "x_plotted", "accuracy_pct"]
    return _save(fig, plotted[[c for c in cols if c in plotted]], out_dir, name)


# ---------------- 4. training curves ----------------

def _smooth(values: pd.Series, window: int) -> pd.Series:
    return values.rolling(window, center=True, min_periods=1).mean() if window > 1 else values


def load_curves(frame: pd.DataFrame, run_root=None) -> tuple[pd.DataFrame, list[str]]:
    """Per-head loss and accuracy of every completed trial's run folder, long form.

    Returns the rows (``size, n, seed, trial, step, tokens, head, loss, acc``)
    and the run folders that could not be read. A relative ``run_dir`` is
    tried as given, then under ``run_root``.

    Example:
        >>> rows, unreadable = load_curves(pd.DataFrame({"size": ["1M"], "n": [1], "seed": [0], "trial": [0],
        ...                                              "run_dir": ["/nonexistent"]}))
        >>> len(rows), unreadable
        (0, ['/nonexistent'])
    """
    parts, unreadable = [], []
    for row in frame.itertuples(index=False):
        run_dir = getattr(row, "run_dir", None)
        if not isinstance(run_dir, str) or not run_dir:
            unreadable.append(f"trial {row.trial}: no run_dir")
            continue
        log = read_run_metrics(run_dir)
        if log is None and run_root is not None and not Path(run_dir).is_absolute():
            log = read_run_metrics(Path(run_root) / run_dir)
        if log is None or "tokens" not in log:
            unreadable.append(run_dir)
            continue
        heads = sorted(int(c.split("=")[1]) for c in log.columns if c.startswith("loss/head="))
        for h in heads:
            part = pd.DataFrame({"step": log["step"], "tokens": log["tokens"], "head": h,
                                 "loss": log[f"loss/head={h}"], "acc": log.get(f"acc/head={h}")})
            part.insert(0, "trial", row.trial)
            part.insert(0, "seed", row.seed)
            part.insert(0, "n", row.n)
            part.insert(0, "size", row.size)
            parts.append(part)
    cols = ["size", "n", "seed", "trial", "step", "tokens", "head", "loss", "acc"]
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)), unreadable


def training_curves(frame: pd.DataFrame, out_dir, *, run_root=None, note: str = "", smooth: int = 5,
                    name: str = "training_curves") -> pd.DataFrame:
    """Training loss and top-1 accuracy of each head against tokens; one figure per size (``NAME_size=S``).

    Columns of a figure are the n values, rows loss and accuracy; one colour
    per head, one line per seed. With more than 50 logged steps the lines are
    a centred rolling mean over ``smooth`` log steps (the CSV has both the raw
    ``loss``/``acc`` and the drawn ``loss_plotted``/``acc_pct_plotted``).
    A UserError if no run folder can be read.

    Example:
        >>> training_curves(pd.DataFrame({"size": ["1M"], "n": [1], "seed": [0], "trial": [0], "run_dir": [None]}),
        ...                 "/tmp")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: no run folder with metrics.jsonl could be read (1 trial(s)): cannot draw training_curves
    """
    curves, _ = load_curves(frame, run_root)
    if curves.empty:
        raise UserError(f"no run folder with metrics.jsonl could be read ({len(frame)} trial(s)): cannot draw {name}")
    out = []
    max_head = int(curves["head"].max())
    head_colors = dict(zip(range(1, max_head + 1), sns.color_palette("rocket", max(max_head, 2) + 1)))
    for size in _sizes(frame):
        at = curves[curves["size"] == size]
        if at.empty:
            continue
        ns = sorted(at["n"].unique())
        drawn = []
        with _style():
            fig = Figure(figsize=(3.7 * len(ns) + 1.9, 6.2), layout="constrained")
            axes = fig.subplots(2, len(ns), sharex=True, sharey="row", squeeze=False)
            for j, n in enumerate(ns):
                for (seed, head), run in at[at["n"] == n].groupby(["seed", "head"], sort=True):
                    run = run.sort_values("step").copy()
                    window = smooth if len(run) > 50 else 1
                    run["loss_plotted"] = _smooth(run["loss"], window)
                    run["acc_pct_plotted"] = _smooth(100 * run["acc"], window)
                    kw = dict(color=head_colors[head], lw=1.3, alpha=0.85)
                    axes[0, j].plot(run["tokens"], run["loss_plotted"], **kw)
                    axes[1, j].plot(run["tokens"], run["acc_pct_plotted"], **kw)
                    drawn.append(run)
                axes[0, j].set_title(f"n = {n}", fontsize=10.5)
                axes[1, j].set_xlabel("training tokens")
                axes[1, j].xaxis.set_major_formatter(FuncFormatter(format_count))
                axes[1, j].xaxis.set_major_locator(MaxNLocator(nbins=4))
            axes[0, 0].set_ylabel("training loss per head\n(cross-entropy, nats)")
            axes[1, 0].set_ylabel("top-1 accuracy per head\n(training batch, %)")
            heads = [Line2D([], [], color=head_colors[h], lw=2, label=f"head {h}: token t+{h}")
                     for h in range(1, int(at["head"].max()) + 1)]
            seeds = int(at.groupby("n")["seed"].nunique().max())
            fig.legend(handles=heads + [Line2D([], [], color="0.5", lw=1, label=f"one line per seed ({seeds})")],
                       loc="outside right center", frameon=False)
            smooth_note = f"lines smoothed over {smooth} log steps" if any(len(r) > 50 for r in drawn) else ""
            _finish(fig, f"Training curves, size {size}", _caption(frame, note, smooth_note))
        plotted = pd.concat(drawn, ignore_index=True)
        _save(fig, plotted, out_dir, f"{name}_size={size}")
        out.append(plotted)
    return pd.concat(out, ignore_index=True)


# ---------------- 5. gain of n > 1 over n = 1 ----------------

def gain_metrics(frame: pd.DataFrame) -> list[str]:
    """The metrics whose gain over n = 1 is drawn: in-domain/OOD accuracy or induction success.

    Example:
        >>> gain_metrics(pd.DataFrame({"accuracy/ood": [0.1], "induction_success": [0.2], "accuracy/in_domain": [0.3]}))
        ['accuracy/in_domain', 'accuracy/ood', 'induction_success']
    """
    return [m for m in (IN_DOMAIN, OOD, INDUCTION) if m in frame and frame[m].notna().any()]


def gain_over_ntp(frame: pd.DataFrame, out_dir, *, metrics=None, note: str = "",
                  name: str = "gain_over_ntp") -> pd.DataFrame:
    """Gain (percentage points) of each n > 1 over n = 1 at each size, one panel per metric.

    The diamond is the difference of the seed means, the bar its 95% Welch
    interval (drawn when both n and n = 1 have at least two seeds; the CSV
    also has the standard error ``se_pp``), the small circles each seed of n
    minus the n = 1 mean. A UserError if no size has both n = 1 and some n > 1.

    Example:
        >>> import tempfile
        >>> f = pd.DataFrame({"size": ["1M"] * 4, "size_rank": [1e6] * 4, "n": [1, 1, 2, 2], "seed": [0, 1, 0, 1],
        ...                   "budget_tokens": [1e6] * 4, "induction_success": [0.1, 0.2, 0.4, 0.5]})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     g = gain_over_ntp(f, d)
        >>> g[g.kind == "mean"][["n", "gain_pp", "seeds", "seeds_baseline"]].round(2).values.tolist()
        [[2, 30.0, 2, 2]]
    """
    metrics = list(metrics or gain_metrics(frame))
    tables = {m: gains(frame, m) for m in metrics}
    tables = {m: t for m, t in tables.items() if len(t)}
    if not tables:
        raise UserError(f"no size has both n = 1 and n > 1 runs finished: cannot draw {name}")
    sizes = [s for s in _sizes(frame) if any(s in set(t["size"]) for t in tables.values())]
    pos = {s: i for i, s in enumerate(sizes)}
    colors = n_colors(frame["n"])
    ns = sorted({int(n) for t in tables.values() for n in t["n"]})
    parts = []
    with _style():
        fig = Figure(figsize=(_panel_width(len(sizes)) * len(tables) + 2.4, 4.4), layout="constrained")
        axes = fig.subplots(1, len(tables), squeeze=False).ravel()
        for ax, (metric, table) in zip(axes, tables.items()):
            ax.axhline(0, color="0.3", lw=1, zorder=1)
            table = table.assign(kind="mean", metric=metric, gain_pp=100 * table["gain"],
                                 se_pp=100 * table["se"].astype(float), lo_pp=100 * table["lo"].astype(float),
                                 hi_pp=100 * table["hi"].astype(float))
            table["x_plotted"] = table["size"].map(pos) + table["n"].map(lambda n: _dodge(ns, n, 0.16))
            seed_rows = []
            for r in table.itertuples(index=False):
                at = frame[(frame["size"] == r.size)].dropna(subset=[metric])
                base = at.loc[at["n"] == 1, metric].mean()
                for seed, value in at.loc[at["n"] == r.n, ["seed", metric]].itertuples(index=False, name=None):
                    seed_rows.append({"kind": "seed", "metric": metric, "size": r.size, "n": r.n, "seed": seed,
                                      "gain_pp": 100 * (value - base), "x_plotted": r.x_plotted + 0.05})
            seeds = pd.DataFrame(seed_rows)
            for n in ns:
                t = table[table["n"] == n]
                if len(seeds):
                    s = seeds[seeds["n"] == n]
                    ax.scatter(s["x_plotted"], s["gain_pp"], s=20, color=colors[n], alpha=0.6, edgecolor="white",
                               linewidth=0.5, zorder=3)
                yerr = np.vstack([(t["gain_pp"] - t["lo_pp"]).fillna(0), (t["hi_pp"] - t["gain_pp"]).fillna(0)])
                ax.errorbar(t["x_plotted"], t["gain_pp"], yerr=yerr, fmt="D", ms=6.5,
                            color=colors[n], capsize=4, lw=1.6, zorder=4)
            ax.set_xticks(range(len(sizes)), [_size_label(frame, s) for s in sizes])
            ax.set_xlim(-0.5, len(sizes) - 0.5)
            ax.set_xlabel(SIZE_AXIS)
            lo, hi = ax.get_ylim()
            ax.set_ylim(min(lo, -2.0), max(hi, 2.0))  # a flat zero gain should look flat, not like noise
            ax.set_ylabel("gain over n = 1 (percentage points)")
            ax.set_title(metric_label(metric, frame), fontsize=10.5)
            ax.grid(axis="x", visible=False)
            parts += [table, seeds]
        handles = [Patch(color=colors[n], label=f"n = {n} − n = 1") for n in ns]
        handles += [Line2D([], [], ls="", marker="o", color="0.35", alpha=0.6, label="one seed − mean(n = 1)"),
                    Line2D([], [], color="0.35", marker="D", ms=6, lw=1.6, label="difference of means\nand 95% interval (Welch)")]
        fig.legend(handles=handles, loc="outside right center", frameon=False)
        single = any(t["se"].isna().any() for t in tables.values())
        _finish(fig, "Gain of multi-token prediction over next-token prediction",
                _caption(frame, note, "no bar: fewer than 2 seeds in a cell" if single else ""))
    plotted = pd.concat([p for p in parts if len(p)], ignore_index=True)
    cols = ["kind", "metric", "size", "n", "seed", "seeds", "seeds_baseline", "x_plotted", "gain_pp", "se_pp",
            "lo_pp", "hi_pp"]
    return _save(fig, plotted[[c for c in cols if c in plotted]], out_dir, name)


