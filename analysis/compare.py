"""Compare groups of run folders on one metric: means with 95% intervals, and every group against a baseline.

A group is ``--group LABEL GLOB``: the run folders the glob matches (one per
seed, typically). ``--group LABEL GLOB METRIC`` reads another metric for that
group, e.g. the marginal of a next-token model beside the heads of MTP models:

    mtplab compare --group "n=2 from scratch" "runs/from-ntp-scratch/n=2,*" \\
        --group "frozen trunk" "runs/from-ntp-frozen/*" \\
        --group "n=1 marginal" "runs/from-ntp-scratch/n=1,*" future_acc/k=2/marginal \\
        --metric future_acc/k=2/head --baseline "n=2 from scratch" --out docs/from-ntp.md

Each run's value comes from its ``eval.json``: the last eval (``--checkpoint
final``, the default: the final eval of a finished run) or the checkpoint the
run chose on validation (``best``). The table gives each group's mean with its
95% t-interval, the per-run values and the training tokens (a run started
from another run's checkpoint, ``train.init_from``, counts the source's tokens
too), then each group minus the baseline: Welch's 95% interval and p, and the
exact permutation p.

Example:
    >>> import json, tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for g, vals in (("a", (0.50, 0.52, 0.51)), ("b", (0.20, 0.22, 0.21))):
    ...     for i, v in enumerate(vals):
    ...         d = root / f"{g}{i}"; d.mkdir()
    ...         _ = (d / "eval.json").write_text(json.dumps({"tokens": 1000, "metrics": {"acc": v}}))
    >>> frame = group_values([parse_group(["A", f"{root}/a*"]), parse_group(["B", f"{root}/b*"])], "acc")
    >>> print(compare_table(frame, baseline="B").splitlines()[2])
    | A | acc | 3 | 51.0% [48.5, 53.5] | 50.0, 52.0, 51.0 | 1,000 | +30.0 [+27.7, +32.3] | 0.000 | 0.10 |
"""

from __future__ import annotations

import glob
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.runs import read_eval
from analysis.stats import mean_interval, welch
from lab.errors import UserError
from lab.paths import atomic_write_text

CHECKPOINTS = ("final", "best")


@dataclass(frozen=True)
class Group:
    """A labelled set of run folders, and the metric read from them (None: the command's --metric)."""

    label: str
    pattern: str
    metric: str | None = None


def parse_group(values: list[str]) -> Group:
    """The values of one ``--group LABEL GLOB [METRIC]`` -> a Group.

    Example:
        >>> parse_group(["n=1 marginal", "runs/x/n=1,*", "future_acc/k=2/marginal"])
        Group(label='n=1 marginal', pattern='runs/x/n=1,*', metric='future_acc/k=2/marginal')
    """
    if not 2 <= len(values) <= 3 or not all(v.strip() for v in values):
        raise UserError(f"--group {' '.join(values)}: give LABEL GLOB or LABEL GLOB METRIC (non-empty), "
                        f"e.g. --group 'from scratch' 'runs/s/n=2,*'")
    return Group(values[0].strip(), values[1].strip(), values[2].strip() if len(values) == 3 else None)


def _eval_tokens(data: dict | None) -> float:
    """The training tokens at a run's last eval (its ``tokens``, else its history's last entry)."""
    if not data:
        return math.nan
    history = data.get("history") or [{}]
    return float(data.get("tokens") or history[-1].get("tokens") or math.nan)


def _tokens(run_dir: Path, data: dict) -> float:
    """Training tokens of a run, counting its train.init_from source's own (one level: sources are read as given)."""
    tokens = _eval_tokens(data)
    try:
        meta = json.loads((run_dir / "config.json").read_text()).get("meta", {}).get("init_from")
        if meta:
            tokens += _eval_tokens(read_eval(meta["run_dir"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return tokens


def group_values(groups: list[Group], metric: str, checkpoint: str = "final") -> pd.DataFrame:
    """One row per run folder: group, run, metric, value, tokens. A group without runs or values is a UserError.

    Example:
        >>> group_values([Group("x", "/nonexistent/*")], "acc")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: group 'x': no run folder matches /nonexistent/*
    """
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"unknown --checkpoint '{checkpoint}'; choose one of {', '.join(CHECKPOINTS)}")
    labels = [g.label for g in groups]
    if len(set(labels)) != len(labels):
        raise UserError(f"group labels must differ; got {', '.join(labels)}")
    rows = []
    for g in groups:
        name = g.metric or metric
        dirs = sorted(Path(p) for p in glob.glob(g.pattern) if (Path(p) / "eval.json").is_file())
        if not dirs:
            raise UserError(f"group '{g.label}': no run folder matches {g.pattern}")
        for d in dirs:
            data = read_eval(d) or {}
            where = data.get("best") if checkpoint == "best" else data
            value = (where or {}).get("metrics", {}).get(name)
            if value is None:
                raise UserError(f"group '{g.label}': {d} has no {name} in its {checkpoint} eval (eval.json); "
                                f"see its metrics, or choose another --metric/--checkpoint")
            rows.append({"group": g.label, "run": str(d), "metric": name, "value": float(value),
                         "tokens": _tokens(d, data)})
    return pd.DataFrame(rows)


NOT_FRACTIONS = ("loss", "gap", "tokens", "positions", "seconds")  # metric names never in %


def in_percent(frame: pd.DataFrame) -> bool:
    """Whether the values are fractions, shown in percent: all in [0, 1], and no metric a loss, a gap or a count.

    Example:
        >>> in_percent(pd.DataFrame({"metric": ["induction_success"], "value": [0.4]}))
        True
        >>> in_percent(pd.DataFrame({"metric": ["loss/heldout"], "value": [0.9]}))
        False
    """
    fractions = frame["value"].dropna().between(0, 1).all()
    return bool(fractions) and not any(word in m for m in set(frame["metric"]) for word in NOT_FRACTIONS)


def _number(percent: bool):
    """x -> text: in percent with one decimal (fractions), else four significant digits; signed for differences."""
    def fmt(x: float, signed: bool = False) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "n/a"
        return f"{100 * x:{'+' if signed else ''}.1f}" if percent else f"{x:{'+' if signed else ''}.4g}"
    return fmt


def compare_table(frame: pd.DataFrame, baseline: str | None = None) -> str:
    """Markdown: per group, mean [95% interval], per-run values, tokens; minus the baseline if given.

    Fractions (accuracies, success rates) are in percent, other metrics (losses, tokens per forward) as they are
    (:func:`in_percent`).

    Example:
        >>> f = pd.DataFrame({"group": ["a", "a"], "run": ["r0", "r1"], "metric": "m", "value": [0.2, 0.4],
        ...                   "tokens": [10.0, 10.0]})
        >>> compare_table(f).splitlines()[2]
        '| a | m | 2 | 30.0% [-97.1, 157.1] | 20.0, 40.0 | 10 |'
    """
    groups = list(dict.fromkeys(frame["group"]))
    if baseline is not None and baseline not in groups:
        raise UserError(f"--baseline '{baseline}' is not a group; the groups are {', '.join(groups)}")
    head = "| group | metric | runs | mean [95% interval] | per run | tokens |"
    rule = "|---|---|---|---|---|---|"
    if baseline:
        head += f" minus {baseline} [95% interval] | Welch p | permutation p |"
        rule += "---|---|---|"
    lines = [head, rule]
    base = frame[frame["group"] == baseline]["value"] if baseline else None
    percent = in_percent(frame)
    num, unit = _number(percent), "%" if percent else ""
    for g in groups:
        sub = frame[frame["group"] == g]
        mean, lo, hi, k = mean_interval(sub["value"])
        tokens = sub["tokens"].median()
        line = (f"| {g} | {sub['metric'].iloc[0]} | {k} | {num(mean)}{unit} [{num(lo)}, {num(hi)}] | "
                f"{', '.join(num(v) for v in sub['value'])} | {'n/a' if math.isnan(tokens) else f'{tokens:,.0f}'} |")
        if baseline:
            if g == baseline:
                line += " | | |"
            else:
                c = welch(sub["value"], base)
                p = "n/a" if c.p is None else f"{c.p:.3f}"
                perm = "n/a" if c.p_perm is None else f"{c.p_perm:.2f}"
                line += f" {num(c.diff, True)} [{num(c.lo, True)}, {num(c.hi, True)}] | {p} | {perm} |"
        lines.append(line)
    return "\n".join(lines)


def draw_compare(frame: pd.DataFrame, out, *, title: str = "") -> list[Path]:
    """Each group's runs as points and its mean with the 95% t-interval; a PNG, a PDF and the CSV drawn.

    Example:
        >>> import tempfile
        >>> f = pd.DataFrame({"group": ["a", "a", "b"], "run": ["r0", "r1", "r2"], "metric": "m",
        ...                   "value": [0.2, 0.4, 0.5], "tokens": 10.0})
        >>> [p.suffix for p in draw_compare(f, Path(tempfile.mkdtemp()) / "c.png")]
        ['.png', '.pdf', '.csv']
    """
    from matplotlib.figure import Figure

    from analysis.plotkit import _style

    groups = list(dict.fromkeys(frame["group"]))
    scale = 100 if in_percent(frame) else 1
    with _style():
        fig = Figure(figsize=(9.0, 0.5 * len(groups) + 1.8))
        ax = fig.subplots()
        for y, g in enumerate(groups):
            values = frame[frame["group"] == g]["value"] * scale
            mean, lo, hi, _ = mean_interval(values)
            if not math.isnan(lo):
                ax.plot([lo, hi], [y, y], color="C0", lw=2.2, zorder=2)
            ax.scatter([mean], [y], s=55, marker="D", color="C0", zorder=3)
            ax.scatter(values, [y] * len(values), s=20, color="0.35", zorder=4)
        ax.set_yticks(range(len(groups)), groups)
        ax.invert_yaxis()
        metrics = list(dict.fromkeys(frame["metric"]))
        ax.set_xlabel(f"{' / '.join(metrics)}{' (%)' if scale == 100 else ''}\n"
                      "runs (grey), mean (diamond) and its 95% t-interval", fontsize=9)
        if title:
            ax.set_title(textwrap.fill(title, 80), fontsize=10.5)
        fig.tight_layout()
        out = Path(out)
        written = [out.with_suffix(".png"), out.with_suffix(".pdf"), out.with_suffix(".csv")]
        fig.savefig(written[0], dpi=120)
        fig.savefig(written[1])
    frame.to_csv(written[2], index=False)
    return written


def cmd_compare(args) -> int:
    """``mtplab compare --group LABEL GLOB [METRIC] ... --metric M [--baseline LABEL] [--out FILE.md]``."""
    groups = [parse_group(v) for v in args.group]
    for flag, path in (("--out", args.out), ("--figure", args.figure)):
        if path and (Path(path).is_dir() or not Path(path).parent.is_dir()):
            raise UserError(f"{flag} {path}: give a file path in an existing folder")
    if args.figure and Path(args.figure).suffix.lower() not in (".png", ""):
        raise UserError(f"--figure {args.figure}: give a .png path (a .pdf and a .csv are written beside it)")
    frame = group_values(groups, args.metric, args.checkpoint)
    table = compare_table(frame, args.baseline)
    print(table)
    if args.out:
        atomic_write_text(Path(args.out), table + "\n")
        print(f"wrote {args.out}")
    if args.figure:
        for path in draw_compare(frame, args.figure, title=args.title or ""):
            print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    """The ``compare`` subcommand (added by :func:`analysis.cli.add_parser`)."""
    import argparse

    c = sub.add_parser("compare", help="groups of run folders on one metric: means, 95%% intervals, against a baseline",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  mtplab compare --group scratch 'runs/from-ntp-scratch/n=2,*' "
                              "--group frozen 'runs/from-ntp-frozen/*' \\\n"
                              "      --group marginal 'runs/from-ntp-scratch/n=1,*' future_acc/k=2/marginal \\\n"
                              "      --metric future_acc/k=2/head --baseline scratch")
    c.add_argument("--group", action="append", nargs="+", required=True, metavar="LABEL GLOB [METRIC]",
                   help="a label and a glob of run folders (quote it); a third value reads another metric for it")
    c.add_argument("--metric", required=True, help="the metric every group without its own @METRIC reads")
    c.add_argument("--baseline", help="the group every other group is compared with (Welch interval and p)")
    c.add_argument("--checkpoint", choices=CHECKPOINTS, default="final",
                   help="final (default): each run's last eval; best: the checkpoint it chose on validation")
    c.add_argument("--out", help="also write the markdown table to this file")
    c.add_argument("--figure", help="also draw the groups (runs, means, intervals) to this PNG (+ PDF and CSV)")
    c.add_argument("--title", help="the figure's title")
    c.set_defaults(func=cmd_compare)
