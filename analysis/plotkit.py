"""Shared pieces of the figures: style, colours, captions, saving, and the task's labels.

Used by :mod:`analysis.figures` (polyarith, training curves, gains) and
:mod:`analysis.induction_figures`. Figures are drawn on
:class:`matplotlib.figure.Figure` objects (no pyplot, no global backend
switch), so this module is safe to import anywhere. Labels that depend on the
task (the in-domain range of polyarith, the figure titles) are read from the
run config columns of the frame (``task.train_max_ops``, ...), not hard-coded.

Example:
    >>> f = pd.DataFrame({"task.train_min_ops": [1], "task.train_max_ops": [3]})
    >>> metric_label("accuracy/ood", f), task_title("polyarith")
    ('out-of-domain accuracy (m > 3)', 'Polynomial arithmetic')
"""

from __future__ import annotations

import contextlib
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from analysis import paper

OPS = re.compile(r"^accuracy/ops=(\d+)$")
IN_DOMAIN, OOD = "accuracy/in_domain", "accuracy/ood"
INDUCTION = "induction_success"
LABELS = {IN_DOMAIN: "in-domain accuracy", OOD: "out-of-domain accuracy", INDUCTION: "induction success",
          "accuracy/all": "accuracy, all m"}
TASK_TITLES = {"polyarith": "Polynomial arithmetic", "induction": "Induction"}
DPI = 150


# ---------------- the task's labels ----------------

def _config_int(frame: pd.DataFrame, column: str) -> int | None:
    if column in frame and frame[column].notna().any():
        return int(frame[column].dropna().mode().iloc[0])
    return None


def train_ops_range(frame: pd.DataFrame) -> tuple[int | None, int | None]:
    """(train_min_ops, train_max_ops) of the runs' task config (the most common values), None where not recorded.

    Example:
        >>> train_ops_range(pd.DataFrame({"task.train_max_ops": [4, 4]})), train_ops_range(pd.DataFrame())
        ((None, 4), (None, None))
    """
    return _config_int(frame, "task.train_min_ops"), _config_int(frame, "task.train_max_ops")


def metric_label(metric: str, frame: pd.DataFrame | None = None, meta=None) -> str:
    """A metric's name in words; in-domain/OOD ranges from the task's declared slices (``meta``, a TaskMeta), else
    from the runs' ``task.train_*_ops`` config.

    Example:
        >>> metric_label("accuracy/in_domain", pd.DataFrame({"task.train_min_ops": [2], "task.train_max_ops": [6]}))
        'in-domain accuracy (2 ≤ m ≤ 6)'
        >>> metric_label("accuracy/in_domain"), metric_label("loss")
        ('in-domain accuracy', 'loss')
        >>> from analysis.taskmeta import TaskMeta
        >>> metric_label("accuracy/ood", meta=TaskMeta.of("copy", ["accuracy/length=2", "accuracy/length=8"]))
        'out-of-domain accuracy (length > 8)'
    """
    base = LABELS.get(metric, metric)
    if meta is not None and meta.in_domain and meta.prefix != "accuracy/ops":
        key, (lo, hi) = meta.axis.split()[-1], meta.in_domain_range
        if metric == IN_DOMAIN:
            return f"{base} ({key} {lo}–{hi})"
        if metric == OOD:
            return f"{base} ({key} > {hi})"
    lo, hi = train_ops_range(frame) if frame is not None else (None, None)
    if hi is not None and metric == IN_DOMAIN:
        return f"{base} ({lo} ≤ m ≤ {hi})" if lo and lo > 1 else f"{base} (m ≤ {hi})"
    if hi is not None and metric == OOD:
        return f"{base} (m > {hi})"
    return base


def task_title(task: str) -> str:
    """The task's name for figure titles.

    Example:
        >>> task_title("induction"), task_title("my_task")
        ('Induction', 'my_task')
    """
    return TASK_TITLES.get(task, task or "study")


# ---------------- shared pieces ----------------

@contextlib.contextmanager
def _style():
    """Seaborn's whitegrid look at a legible size, without touching global rcParams for good."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.95):
        yield


def format_count(x: float, _pos=None) -> str:
    """1.2M-style label for a parameter or token count (an axis formatter too).

    Example:
        >>> format_count(3.1e7), format_count(2.5e9), format_count(5e5)
        ('31M', '2.5B', '500k')
    """
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            v = x / scale
            return f"{v:.1f}{unit}".replace(".0" + unit, unit) if v < 10 else f"{v:.0f}{unit}"
    return f"{x:g}"


def n_colors(ns) -> dict:
    """One fixed colour per n (colour-blind palette), the same in every figure of a study.

    Example:
        >>> list(n_colors([4, 1, 2]))
        [1, 2, 4]
    """
    palette = sns.color_palette("colorblind", 10)
    order = [0, 1, 2, 4, 3, 5, 6, 8, 9, 7]  # blue, orange, green, pink, red, ...
    return {n: palette[order[i % 10]] for i, n in enumerate(sorted({int(x) for x in ns}))}


def budget_caption(frame: pd.DataFrame) -> str:
    """"budget: 3.0M tokens/run, paper: 26.2B" from the frame's ``budget_tokens``.

    Example:
        >>> budget_caption(pd.DataFrame({"budget_tokens": [3e6, 3e6]}))
        'budget: 3.0M tokens/run, paper: 26.2B'
    """
    values = sorted(set(frame["budget_tokens"].dropna())) if "budget_tokens" in frame else []
    if not values:
        ours = "unknown"
    elif len(values) == 1:
        ours = paper.format_tokens(values[0])
    else:
        ours = f"{paper.format_tokens(values[0])}-{paper.format_tokens(values[-1])}"
    return f"budget: {ours} tokens/run, paper: {paper.format_tokens(paper.PAPER_TOKENS_PER_RUN)}"


def _caption(frame: pd.DataFrame, note: str, extra: str = "") -> str:
    parts = [budget_caption(frame)] + [p for p in (note, extra) if p]
    return "   ·   ".join(parts)


def _wrap_caption(caption: str, width_inches: float) -> str:
    """Break a caption at its separators (a part longer than a line at its spaces) to fit the figure's width."""
    limit = max(40, int(width_inches * 14))
    lines, line = [], ""
    for part in caption.split("   ·   "):
        if len(part) > limit:  # a long part gets lines of its own
            lines += ([line] if line else []) + textwrap.wrap(part, limit)
            line = ""
        elif line and len(line) + 7 + len(part) > limit:
            lines.append(line)
            line = part
        else:
            line = f"{line}   ·   {part}" if line else part
    return "\n".join(lines + ([line] if line else []))


def _finish(fig: Figure, title: str, caption: str) -> None:
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.supxlabel(_wrap_caption(caption, fig.get_figwidth()), fontsize=8.5, color="0.3")


def _save(fig: Figure, data: pd.DataFrame, out_dir, name: str) -> pd.DataFrame:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = file_name(name)
    data = data.copy()
    for col in ("n", "seed", "trial", "seeds", "seeds_baseline", "m", "head", "step", "runs", "runs_reached",
                "not_reached"):
        if col in data and pd.api.types.is_numeric_dtype(data[col]):
            data[col] = data[col].round().astype("Int64")  # 2, not 2.0, and blank where not defined
    fig.savefig(out / f"{name}.png", dpi=DPI)
    fig.savefig(out / f"{name}.pdf")
    data.to_csv(out / f"{name}.csv", index=False)
    return data


def file_name(name: str) -> str:
    """A figure name safe in file names and markdown links.

    Example:
        >>> file_name("training_curves_size=custom d64 L3")
        'training_curves_size=custom_d64_L3'
    """
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)


def _sizes(frame: pd.DataFrame) -> list[str]:
    """Sizes in ladder / parameter order."""
    return list(frame.groupby("size", sort=False)["size_rank"].first().sort_values().index)


def _size_label(frame: pd.DataFrame, size: str, *, long: bool = False) -> str:
    """``30M\n31M`` (tick label: name over non-embedding count) or ``30M (31M non-emb.)`` (title)."""
    params = frame.loc[frame["size"] == size, "non_embedding"].dropna() if "non_embedding" in frame else []
    count = format_count(params.mean()) if len(params) else "?"
    return f"{size} ({count} non-emb.)" if long else f"{size}\n{count}"


SIZE_AXIS = "model size\n(name, and non-embedding parameters)"


def _panel_width(n_sizes: int) -> float:
    return max(4.3, 0.85 * n_sizes + 1.2)


def _dodge(ns: list, n, width: float) -> float:
    """Offset of n's markers so that seeds of different n do not hide each other."""
    i = sorted(ns).index(n)
    return (i - (len(ns) - 1) / 2) * width


def _legend_handles(colors: dict, *, seeds=True, mean=True, extra=()) -> list:
    handles = [Patch(color=c, label=f"n = {n}") for n, c in colors.items()]
    if seeds:
        handles.append(Line2D([], [], ls="", marker="o", color="0.35", alpha=0.75, label="one seed"))
    if mean:
        handles.append(Line2D([], [], color="0.35", marker="D", ms=5, lw=2, label="mean over seeds"))
    return handles + list(extra)


def _percent_axis(ax, values) -> None:
    top = float(np.nanmax(values)) if len(values) else 100.0
    top = max(10.0, min(100.0, top * 1.12 + 4) if top < 88 else 102.0)
    ax.set_ylim(-0.025 * top, top)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))


def _seeds_and_means(frame: pd.DataFrame, metric: str, keys: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    data = frame.dropna(subset=[metric])
    seeds = data[[c for c in keys + ["seed", "trial", "non_embedding"] if c in data]].copy()
    seeds["value_pct"] = 100 * data[metric]
    agg = {"value_pct": ("value_pct", "mean"), "seeds": ("value_pct", "count")}
    if "non_embedding" in seeds:
        agg["non_embedding"] = ("non_embedding", "mean")
    means = seeds.groupby(keys, sort=False).agg(**agg).reset_index()
    return seeds, means


def ops_columns(frame: pd.DataFrame) -> dict[int, str]:
    """``{m: "accuracy/ops=m"}`` for the per-m accuracy columns present.

    Example:
        >>> ops_columns(pd.DataFrame(columns=["accuracy/ops=10", "accuracy/ops=2", "accuracy/ood"]))
        {2: 'accuracy/ops=2', 10: 'accuracy/ops=10'}
    """
    found = {int(OPS.match(c).group(1)): c for c in frame.columns if isinstance(c, str) and OPS.match(c)}
    return dict(sorted(found.items()))


def _train_max_ops(frame: pd.DataFrame) -> int:
    """The runs' ``task.train_max_ops``, else the task's (and the paper's) default 5."""
    hi = _config_int(frame, "task.train_max_ops")
    return hi if hi is not None else paper.POLYARITH_TRAIN_OPS[1]

