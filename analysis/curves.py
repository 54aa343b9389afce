"""Learning curves of single runs (no study needed): a metric against tokens and against training minutes.

This is the calibration figure: which batch, learning rate or task knob makes
a model learn fastest per token and per CPU minute. Each run folder's
``eval.json`` history gives the metric at every eval; its ``metrics.jsonl``
gives the training time, summed over log intervals as tokens / tokens_per_s
(so eval time is not counted, and a run that shared its cores with other jobs
shows the time it actually took).

    mtplab curves runs/a runs/b --metric accuracy/ops=1 --metric accuracy/ops=2 --out docs/calibration.png

writes the PNG, a PDF beside it and the CSV of every point drawn.

Example:
    >>> import json, tempfile
    >>> d = Path(tempfile.mkdtemp()) / "run"; d.mkdir()
    >>> _ = (d / "eval.json").write_text(json.dumps({"history": [{"tokens": 100, "metrics": {"acc": 0.5}}]}))
    >>> _ = (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "tokens": 100, "tokens_per_s": 50.0}) + "\\n")
    >>> curve_points([d], ["acc"])[["run", "tokens", "minutes", "value"]].values.tolist()
    [['run', 100, 0.03333333333333333, 0.5]]
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from analysis.runs import read_eval, read_run_metrics
from lab.errors import UserError


def train_minutes(run_dir) -> pd.Series | None:
    """Cumulative training minutes at each logged token count (index: tokens), from ``metrics.jsonl``.

    Example:
        >>> train_minutes("/nonexistent") is None
        True
    """
    log = read_run_metrics(run_dir)
    if log is None or "tokens_per_s" not in log:
        return None
    log = log.sort_values("tokens").drop_duplicates("tokens")
    gaps = log["tokens"].diff().fillna(log["tokens"].iloc[0])
    seconds = (gaps / log["tokens_per_s"].clip(lower=1e-9)).cumsum()
    return pd.Series((seconds / 60).values, index=log["tokens"].values)


def curve_points(run_dirs, metrics: list[str], labels: list[str] | None = None) -> pd.DataFrame:
    """One row per (run, eval, metric): run label, tokens, training minutes, metric, value.

    A run folder without ``eval.json``, or without any of the metrics, is a UserError.

    Example:
        >>> curve_points(["/nonexistent"], ["acc"])
        Traceback (most recent call last):
        ...
        lab.errors.UserError: /nonexistent: no eval.json (not a run folder, or no eval yet)
    """
    rows = []
    for i, run in enumerate(run_dirs):
        data = read_eval(run)
        if not data or not data.get("history"):
            raise UserError(f"{run}: no eval.json (not a run folder, or no eval yet)")
        label = labels[i] if labels else Path(str(run)).name
        minutes = train_minutes(run)
        found = False
        for entry in data["history"]:
            tokens = entry["tokens"]
            at = None
            if minutes is not None and len(minutes):
                at = float(minutes[minutes.index <= tokens].iloc[-1]) if (minutes.index <= tokens).any() else 0.0
            for metric in metrics:
                if metric in entry.get("metrics", {}):
                    found = True
                    rows.append({"run": label, "tokens": tokens, "minutes": at, "metric": metric,
                                 "value": entry["metrics"][metric]})
        if not found:
            raise UserError(f"{run}: none of {', '.join(metrics)} in its evals; "
                            f"it has e.g. {', '.join(sorted(data['history'][-1].get('metrics', {}))[:6])}")
    return pd.DataFrame(rows)


def draw_curves(points: pd.DataFrame, out: Path, *, title: str = "") -> list[Path]:
    """Two panels per metric row (against tokens, against training minutes); PNG, PDF and CSV.

    Returns the files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    metrics = list(dict.fromkeys(points["metric"]))
    runs = list(dict.fromkeys(points["run"]))
    palette = dict(zip(runs, sns.color_palette("tab10", len(runs))))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(10, 2.8 * len(metrics) + 0.6), squeeze=False)
    for r, metric in enumerate(metrics):
        sub = points[points["metric"] == metric]
        for c, x in enumerate(("tokens", "minutes")):
            ax = axes[r][c]
            for run in runs:
                line = sub[sub["run"] == run].dropna(subset=[x])
                ax.plot(line[x] / (1e6 if x == "tokens" else 1), line["value"], marker=".", ms=3, lw=1.4,
                        color=palette[run], label=run)
            ax.set_xlabel("training tokens (millions)" if x == "tokens" else "training minutes (as measured)")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    written = [out.with_suffix(".png"), out.with_suffix(".pdf"), out.with_suffix(".csv")]
    fig.savefig(written[0], dpi=110)
    fig.savefig(written[1])
    plt.close(fig)
    points.to_csv(written[2], index=False)
    return written


def cmd_curves(args) -> int:
    """``mtplab curves RUN... --metric M --out FILE.png``: the calibration figure of some run folders."""
    labels = args.label or None
    if labels and len(labels) != len(args.runs):
        raise UserError(f"--label given {len(labels)} times for {len(args.runs)} runs; give one per run or none")
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a .png path (a .pdf and a .csv are written beside it)")
    if out.suffix.lower() not in (".png", ""):
        raise UserError(f"--out {out}: give a .png path (a .pdf and a .csv are written beside it)")
    for path in (out.with_suffix(".png"), out.with_suffix(".pdf"), out.with_suffix(".csv")):
        if path.is_dir() or not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise UserError(f"--out {out}: cannot write {path} (a folder, or its folder is missing or read-only)")
    points = curve_points(args.runs, args.metric, labels)
    for path in draw_curves(points, out, title=args.title or ""):
        print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    """The ``curves`` subcommand (added by :func:`analysis.cli.add_parser`)."""
    import argparse

    c = sub.add_parser("curves", help="learning curves of run folders: a metric against tokens and minutes",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  mtplab curves runs/a runs/b --metric accuracy/ops=1 --out docs/cal.png\n"
                              "  mtplab curves runs/x --metric induction_success --label 'lr 2e-3' --out cal.png")
    c.add_argument("runs", nargs="+", help="run folders (each with eval.json and metrics.jsonl)")
    c.add_argument("--metric", action="append", required=True, help="metric to draw (repeat for several rows)")
    c.add_argument("--label", action="append", help="legend label per run, in order (default: folder names)")
    c.add_argument("--title", help="figure title")
    c.add_argument("--out", required=True, help="PNG path; a PDF and the CSV of the points are written beside it")
    c.set_defaults(func=cmd_curves)
