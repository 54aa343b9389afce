"""The markdown report of a study: spec and budget, tables with intervals, comparisons, figures, the paper.

:func:`render` turns a loaded study (:class:`analysis.loader.StudyData`)
and the figures already drawn into one markdown text. It states which
checkpoint the metrics come from (by default the one each run chose on
validation), any best-of-K selection, and what is still missing, so a report
of a running study is honest about it. The statistics are those of
:mod:`analysis.stats`: 95% t-intervals across seeds, Welch comparisons of
each n > 1 with n = 1, and a plain verdict per comparison.

Example:
    >>> import pandas as pd
    >>> f = pd.DataFrame({"size": ["1M"] * 2, "size_rank": [1e6] * 2, "n": [1, 1], "seed": [0, 1],
    ...                   "accuracy/in_domain": [0.2, 0.4]})
    >>> print(metric_table(f, "accuracy/in_domain"))
    | size | n | mean | 95% interval | sd | min | max | seeds |
    |---|---|---|---|---|---|---|---|
    | 1M | 1 | 30.00% | [-97.06%, 157.06%] | 14.14 | 20.00% | 40.00% | 2 |
"""

from __future__ import annotations

import datetime
import math
import os
import re
from pathlib import Path

import pandas as pd
import yaml

from analysis import paper, stats
from analysis.induction_figures import milestone_summary, milestone_threshold, run_milestones
from analysis.loader import StudyData
from analysis.plotkit import IN_DOMAIN, INDUCTION, OOD, budget_caption, format_count
from analysis.report_paper import paper_section
from analysis.selection import valid_column
from sweeps.storage import redact

FAMILY = re.compile(r"^(?P<family>.+)/(?P<key>\w+)=(?P<value>[^/]+)$")
DESCRIPTIONS = {
    "induction_vs_params": "Induction success (%) against non-embedding parameters (log axis), one colour per n; "
                           "every seed a marker, the mean over seeds a line (the paper's Figure 7).",
    "induction_curves": "Test induction success (%) against training tokens at every eval (the run folders' "
                        "eval.json), one panel per size, one colour per n; every seed a thin line, the mean over "
                        "seeds a thick line; the dotted line is the {threshold} threshold of tokens to induction.",
    "tokens_to_induction": "Training tokens until test induction success first reached {threshold}, against non-embedding "
                           "parameters, by n: every seed a marker, the mean of the runs that reached it with its 95% "
                           "interval; runs that never reached it sit at the top edge (\"not reached\").",
    "accuracy_vs_ops": "Exact-match accuracy (%) against the number of operations m, one panel per size, one "
                       "colour per n; the out-of-domain region is shaded; on a 100M panel the paper's Fig. 8 "
                       "readings are dashed (the paper's Figures 8 and S16).",
    "accuracy_vs_size": "In-domain and out-of-domain accuracy (%) against model size, one colour per n.",
    "training_curves": "Training loss (nats) and top-1 accuracy (%) of each head against training tokens, "
                       "one column per n, one line per seed (from the run folders' metrics.jsonl).",
    "gain_over_ntp": "Gain of each n > 1 over n = 1 at each size in percentage points: difference of the seed "
                     "means with its 95% Welch interval, and each seed's difference to the n = 1 mean.",
}


def _description(figure: str, threshold: float = 0.1) -> str:
    """The caption under a figure in the report (any task's accuracy-vs-difficulty figure has one).

    ``threshold``: the runs' tokens-to-induction threshold, named in the induction captions.

    Example:
        >>> _description("accuracy_vs_length").startswith("Exact-match accuracy (%) against the task's difficulty")
        True
        >>> "reached 5%," in _description("tokens_to_induction", 0.05)
        True
    """
    if figure in DESCRIPTIONS:
        return DESCRIPTIONS[figure].replace("{threshold}", f"{100 * threshold:g}%")
    if figure.startswith("accuracy_vs_"):
        return ("Exact-match accuracy (%) against the task's difficulty, one panel per size, one colour per n; "
                "the out-of-domain values (the task's declared ood slices) are shaded.")
    return ""


def is_rate(metric: str) -> bool:
    """Whether a metric is a fraction to show as a percentage.

    Example:
        >>> is_rate("accuracy/ops=3"), is_rate("induction_success"), is_rate("loss")
        (True, True, False)
    """
    return "acc" in metric or "success" in metric


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value, rate: bool, *, sign: bool = False) -> str:
    if _missing(value):
        return "–"
    if rate:
        return f"{100 * value:+.2f}%" if sign else f"{100 * value:.2f}%"
    return f"{value:+.4g}" if sign else f"{value:.4g}"


def _interval(lo, hi, rate: bool, *, sign: bool = False, unit: str = "") -> str:
    if _missing(lo) or _missing(hi):
        return "n/a (1 seed)" if not sign else "n/a"
    if rate and unit:
        return f"[{100 * lo:+.2f}, {100 * hi:+.2f}] {unit}"
    return f"[{_fmt(lo, rate, sign=sign)}, {_fmt(hi, rate, sign=sign)}]"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _keys(frame: pd.DataFrame) -> list[str]:
    """The cell-group keys of the tables: size, the variant (a swept key's value) if any, n."""
    return ["size"] + (["variant"] if "variant" in frame else []) + ["n"]


def metric_table(frame: pd.DataFrame, metric: str) -> str:
    """Per (size, n): mean, 95% t-interval across seeds (n/a with one), sd (points for rates), min, max, seeds.

    Example:
        >>> f = pd.DataFrame({"size": ["1M"], "n": [2], "loss": [1.5]})
        >>> print(metric_table(f, "loss").splitlines()[-1])
        | 1M | 2 | 1.5 | n/a (1 seed) | – | 1.5 | 1.5 | 1 |
    """
    rate, keys = is_rate(metric), _keys(frame)
    summary = stats.summarize(frame, metric, by=keys)
    rows = [[r[k] if k != "n" else int(r[k]) for k in keys]
            + [_fmt(r["mean"], rate), _interval(r["lo"], r["hi"], rate),
               "–" if pd.isna(r["sd"]) else (f"{100 * r['sd']:.2f}" if rate else f"{r['sd']:.3g}"),
               _fmt(r["min"], rate), _fmt(r["max"], rate), int(r["seeds"])] for _, r in summary.iterrows()]
    return _table(keys + ["mean", "95% interval", "sd", "min", "max", "seeds"], rows)


def family_table(frame: pd.DataFrame, columns: dict) -> str:
    """One wide table for a metric family (``accuracy/ops=1..10``): mean [95% interval] per (size, n).

    Example:
        >>> f = pd.DataFrame({"size": ["1M"] * 2, "n": [1, 1], "accuracy/ops=1": [0.5, 0.7]})
        >>> print(family_table(f, {"1": "accuracy/ops=1"}).splitlines()[-1])
        | 1M | 1 | 2 | 60.0 [-67.1, 187.1] |
    """
    first = next(iter(columns.values()))
    rate = is_rate(first)
    scale = 100 if rate else 1
    key = FAMILY.match(first).group("key") if FAMILY.match(first) else ""
    keys = _keys(frame)
    groups = frame.groupby(keys, sort=False)
    order = stats.summarize(frame, first, by=keys)[keys].values.tolist() if first in frame else []
    rows = []
    for group in order:
        g = groups.get_group(tuple(group))
        cells = []
        for col in columns.values():
            mean, lo, hi, k = stats.mean_interval(g[col] * scale) if col in g else (math.nan, math.nan, math.nan, 0)
            if k == 0:
                cells.append("–")
            else:
                cells.append(f"{mean:.1f} [{lo:.1f}, {hi:.1f}]" if k > 1 else f"{mean:.1f} (n/a)")
        rows.append([v if k != "n" else int(v) for k, v in zip(keys, group)] + [int(g[first].notna().sum())] + cells)
    return _table(keys + ["seeds"] + [f"{key}={k}" for k in columns], rows)


def headline_metrics(data: StudyData) -> list[str]:
    """The metrics the comparisons and the gain figure use: the objective plus the task's summaries.

    Example:
        >>> headline_metrics(StudyData("s", pd.DataFrame({"accuracy/ood": [0.1]}), pd.DataFrame(),
        ...                            attrs={"objective": "accuracy/in_domain"}))
        ['accuracy/ood']
    """
    wanted = [data.attrs.get("objective"), IN_DOMAIN, OOD, INDUCTION]
    return [m for m in dict.fromkeys(w for w in wanted if w) if m in data.frame and data.frame[m].notna().any()]


def significance_table(frame: pd.DataFrame, metrics: list[str]) -> tuple[str, bool]:
    """Each n > 1 minus n = 1 at the same size, per metric: difference, 95% Welch interval, p-values, verdict.

    Returns (markdown, whether any comparison had two seeds on both sides).

    Example:
        >>> f = pd.DataFrame({"size": ["1M"] * 6, "size_rank": [1e6] * 6, "n": [1, 1, 1, 2, 2, 2],
        ...                   "accuracy/ood": [0.10, 0.12, 0.11, 0.40, 0.42, 0.41]})
        >>> text, tested = significance_table(f, ["accuracy/ood"])
        >>> row = text.splitlines()[-1].split(" | ")
        >>> tested, row[3], row[4], row[-1]
        (True, '+30.00 pp', '[+27.73, +32.27] pp', 'resolved: n = 2 is higher |')
    """
    rows, tested = [], False
    within = ["size"] + (["variant"] if "variant" in frame else [])
    for metric in metrics:
        rate = is_rate(metric)
        for _, g in stats.gains(frame, metric, within=within).iterrows():
            gain = f"{100 * g['gain']:+.2f} pp" if rate else f"{g['gain']:+.4g}"
            seeds = f"{int(g['seeds'])} / {int(g['seeds_baseline'])}"
            where = [g[w] for w in within]
            if _missing(g["p"]):
                rows.append([metric, *where, f"{int(g['n'])} vs 1", gain, "–", "–", "–", seeds, stats.verdict(g)])
                continue
            tested = True
            interval = _interval(g["lo"], g["hi"], rate, sign=True, unit="pp" if rate else "")
            p_perm = f"{g['p_perm']:.3f}" + (f" (min. {g['p_min']:.2f})" if not _missing(g["p_min"]) else "")
            rows.append([metric, *where, f"{int(g['n'])} vs 1", gain, interval, f"{g['p']:.3f}", p_perm, seeds,
                         stats.verdict(g)])
    if not rows:
        return "No size has both n = 1 and n > 1 finished yet.", False
    header = ["metric", *within, "n", "difference", "95% interval (Welch)", "p (Welch t)",
              "p (exact permutation)", "seeds (n / n=1)", "verdict"]
    return _table(header, rows), tested


def milestone_lines(frame: pd.DataFrame, run_root=None) -> list[str]:
    """The tokens-to-induction table: per (size, n) runs that reached it, and the mean with its 95% interval.

    Example:
        >>> f = pd.DataFrame({"size": ["1M"] * 2, "size_rank": [1e6] * 2, "n": [2, 2], "seed": [0, 1],
        ...                   "trial": [0, 1], "milestone:tokens_to_induction": [1e6, float("inf")]})
        >>> milestone_lines(f)[-1].splitlines()[-1]
        '| 1M | 2 | 1 of 2 | 1.0M | n/a (1 seed) |'
        >>> "was at least 5% " in milestone_lines(f.assign(**{"milestone:threshold": 0.05}))[0]  # the runs' threshold
        True
    """
    ms = run_milestones(frame, run_root)
    if ms.empty:
        return []
    summary = milestone_summary(ms)
    rank = frame.groupby("size")["size_rank"].first() if "size_rank" in frame else None
    if rank is not None:
        summary = summary.assign(_r=summary["size"].map(rank)).sort_values(["_r", "n"], kind="stable")
    rows = [[r["size"], int(r["n"]), f"{int(r['reached'])} of {int(r['runs'])}",
             "–" if _missing(r["mean"]) else paper.format_tokens(r["mean"]),
             "n/a (1 seed)" if _missing(r["lo"]) else
             f"[{paper.format_tokens(max(r['lo'], 0))}, {paper.format_tokens(r['hi'])}]"]
            for _, r in summary.iterrows()]
    never = int(summary["not_reached"].sum())
    return [f"Training tokens at the first eval whose test induction success was at least "
            f"{100 * milestone_threshold(frame):g}% (the runs' "
            f"`milestones`). Mean and 95% interval over the runs that reached it; {never} of {len(ms)} runs never "
            "did within their budget.", "",
            _table(["size", "n", "reached", "mean tokens", "95% interval"], rows)]


def selection_lines(frame: pd.DataFrame, key: str, note: str, objective: str | None) -> list[str]:
    """The best-of-K selection: the sentence and which value each (n, size, seed) group chose.

    Example:
        >>> f = pd.DataFrame({"size": ["1M"], "n": [1], "seed": [0], "train.lr": [0.003], "selected_from": [3],
        ...                   "best:valid/acc": [0.5]})
        >>> selection_lines(f, "train.lr", "best of 3 learning rates per (n, size, seed)", "acc")[-1].splitlines()[-1]
        '| 1M | 1 | 0 | 0.003 | 0.5 | 3 |'
    """
    col = valid_column(objective)
    keys = [k for k in ("size", "n", "seed") if k in frame]
    rows = [[r[k] for k in keys] + [f"{r[key]:g}" if isinstance(r[key], float) else r[key],
                                    "–" if col not in frame else f"{r[col]:.4g}", int(r["selected_from"])]
            for _, r in frame.iterrows()]
    return [f"Every number below is for the **{note}**: within each group of runs equal in every other swept key, "
            f"the run with the best `valid/{objective}` (at its own selected checkpoint) is kept and its test "
            "metrics are reported; the test set plays no part in the choice.", "",
            _table(keys + [f"chosen {key}", f"valid/{objective}", "out of"], rows)]


def _budget_lines(data: StudyData) -> list[str]:
    f = data.frame
    lines = []
    budgets = sorted(set(f["budget_tokens"].dropna())) if "budget_tokens" in f else []
    train_cols = {k: f[k].dropna().unique() for k in ("train.steps", "train.batch_tokens", "train.context", "train.lr")
                  if k in f}

    def one(k):
        v = train_cols.get(k)
        return ", ".join(f"{x:g}" if isinstance(x, (int, float)) else str(x) for x in v) if v is not None and len(v) else "?"

    ours = ", ".join(paper.format_tokens(b) for b in budgets) or "unknown"
    lines.append(f"- **Budget per run (ours):** {ours} training tokens "
                 f"(batch {one('train.batch_tokens')} tokens, context {one('train.context')}, peak lr {one('train.lr')}).")
    if "tokens_seen" in f and f["tokens_seen"].notna().any():
        lo, hi = (paper.format_tokens(f["tokens_seen"].min()), paper.format_tokens(f["tokens_seen"].max()))
        lines.append(f"- Tokens actually seen per run: {lo if lo == hi else f'{lo} to {hi}'}.")
    lines.append(f"- **Paper's budget per run:** {paper.PAPER_STEPS:,} steps of {paper.PAPER_BATCH_TOKENS:,} tokens = "
                 f"{paper.format_tokens(paper.PAPER_TOKENS_PER_RUN)} tokens, peak lr {paper.PAPER_LR:g}, context 2048. "
                 f"So {paper.budget_ratio(budgets[-1] if budgets else None)}.")
    if "wall_seconds" in f and f["wall_seconds"].notna().any():
        devices = ", ".join(sorted({str(d) for d in f.get("device", pd.Series(dtype=str)).dropna()})) or "?"
        lines.append(f"- Compute: {f['wall_seconds'].sum() / 3600:.2f} h of training over {len(f)} runs "
                     f"(median {f['wall_seconds'].median():.0f} s per run) on {devices}.")
    return lines


def _sizes_table(frame: pd.DataFrame) -> str:
    rows = []
    cols = {"d_model": "model.d_model", "layers": "model.layers", "heads": "model.n_heads"}
    for (size, n), g in frame.groupby(["size", "n"], sort=False):
        shape = " / ".join(str(g[c].iloc[0]) if c in g else "?" for c in cols.values())
        rows.append([size, int(n), shape, ", ".join(sorted({str(k) for k in g["head_kind"].dropna()})) or "?",
                     format_count(g["non_embedding"].mean()) if g["non_embedding"].notna().any() else "?",
                     format_count(g["params_total"].mean()) if "params_total" in g and g["params_total"].notna().any()
                     else "?",
                     ", ".join(str(int(s)) for s in sorted(set(g["seed"].dropna())))
                     + (f" ({len(g)} runs)" if len(g) > g["seed"].nunique() else "")])
    return _table(["size", "n", "d_model / layers / attn heads", "head kind", "non-embedding params",
                   "total params", "seeds finished"], rows)


GAP, GAP_SE = "memorization_gap", "memorization_gap_se"


def memorization_lines(frame: pd.DataFrame) -> list[str]:
    """The memorization check over the runs: which ones memorized their training data.

    A run is flagged when its ``memorization_gap`` (next-token loss on
    held-out training-stream windows minus on windows it trained on, nats)
    is above 0.1 and above 3 standard errors. Empty if no run records it.

    Example:
        >>> f = pd.DataFrame({"size": ["1M", "30M"], "n": [1, 1], "seed": [0, 0],
        ...                   "memorization_gap": [0.06, 0.9], "memorization_gap_se": [0.045, 0.05]})
        >>> print(memorization_lines(f)[-1].splitlines()[-1])
        | 30M | 1 | 0 | 0.900 | 0.050 |
        >>> memorization_lines(f.iloc[:1])[-1][:16]
        'No run memorized'
    """
    if GAP not in frame or frame[GAP].isna().all():
        return []
    gap = frame[GAP]
    se = frame[GAP_SE].fillna(0) if GAP_SE in frame else pd.Series(0.0, index=frame.index)
    flagged = frame[(gap > 0.1) & (gap > 3 * se)]
    lines = [f"`{GAP}` is the next-token loss on training-stream windows no run trained on minus the loss on "
             f"windows it did (nats; see the lab README). Over {int(gap.notna().sum())} runs it ranges from "
             f"{gap.min():.3f} to {gap.max():.3f}.", ""]
    if flagged.empty:
        return lines + ["No run memorized its training data: every gap is below 0.1 nats or within 3 standard errors "
                        "of zero."]
    lines += [f"**{len(flagged)} run(s) memorized part of their training data** (gap above 0.1 nats and 3 standard "
              "errors); their results may reflect memorization rather than learning:", ""]
    rows = [[r["size"], int(r["n"]), int(r["seed"]) if "seed" in r and pd.notna(r["seed"]) else "–", f"{r[GAP]:.3f}",
             f"{se[i]:.3f}"] for i, r in flagged.iterrows()]
    return lines + [_table(["size", "n", "seed", "gap", "s.e."], rows)]


def _missing_section(data: StudyData) -> list[str]:
    done, missing = data.completed or len(data.frame), len(data.missing)
    lines = [f"{done} of {done + missing} runs finished; {missing} missing."]
    if missing:
        counts = data.missing["state"].value_counts()
        lines[0] += " (" + ", ".join(f"{c} {s.lower().replace('_', ' ')}" for s, c in counts.items()) + ")"
        lines.append("The tables and figures below use the finished cells only.")
        lines.append("")
        rows = [[r["run_key"], r["state"], "–" if pd.isna(r["trial"]) else int(r["trial"])]
                for _, r in data.missing.iterrows()]
        lines.append(_table(["missing run (cell)", "state", "trial"], rows[:200]))
        if len(rows) > 200:
            lines.append(f"... and {len(rows) - 200} more.")
    return lines


def render(data: StudyData, frame: pd.DataFrame, *, figures: dict, skipped: list, report_path, storage: str,
           checkpoint: str, selection: tuple | None = None, run_root=None) -> str:
    """The report's markdown.

    ``frame`` is the runs shown with the chosen checkpoint's metrics
    (:func:`analysis.loader.with_metrics`, after any
    :func:`analysis.selection.select_best`); ``checkpoint`` says which
    checkpoint in words; ``selection`` is ``(key, sentence)`` for a best-of-K
    selection; ``figures`` maps figure names to the files
    :func:`analysis.draw.draw_all` wrote; links are made relative to
    ``report_path``.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"trial": [0], "size": ["1M"], "size_rank": [1e6], "n": [1], "seed": [0],
        ...                   "budget_tokens": [1e6], "non_embedding": [1e6], "head_kind": ["parallel"],
        ...                   "induction_success": [0.25]})
        >>> d = StudyData("demo", f, pd.DataFrame(columns=["run_key", "cell_key", "state", "trial"]),
        ...               attrs={"task": "induction"}, metrics=["induction_success"])
        >>> text = render(d, f, figures={}, skipped=[], report_path="r.md", storage="j.log", checkpoint="final checkpoint")
        >>> "| 1M | 1 | 25.00% | n/a (1 seed) | – | 25.00% | 25.00% | 1 |" in text
        True
    """
    base = Path(report_path).resolve().parent
    attrs, spec = data.attrs, data.spec
    task = data.task
    objective = attrs.get("objective") or spec.get("objective")
    label = checkpoint if " " in checkpoint else f"{checkpoint} checkpoint"
    out = [f"# Study `{data.name}`: {task}", ""]
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    out += [f"Written by `mtplab report` on {stamp} from storage `{redact(storage)}`. "
            f"Metrics are test metrics from the **{label}** of each run"
            + (f"; {selection[1]}." if selection else "."), ""]
    if spec.get("description"):
        out += [f"> {spec['description']}", ""]

    out += ["## Status", ""] + _missing_section(data) + [""]
    for note in data.notes:
        out.append(f"- Note: {note}")
    if skipped:
        out += [f"- Figure not drawn: {s}" for s in skipped]
    out.append("")

    out += ["## Spec and budget", ""]
    direction = attrs.get("direction") or spec.get("direction")
    out.append(f"- **Task:** {task}; **objective:** `{objective or '?'}`" + (f" ({direction})" if direction else ""))
    if attrs.get("spec_path"):
        out.append(f"- Spec file: `{attrs['spec_path']}`")
    out += _budget_lines(data) + [""]
    out += [_sizes_table(data.frame), ""]
    if spec:
        out += ["<details><summary>The sweep spec</summary>", "", "```yaml",
                yaml.safe_dump(spec, sort_keys=False, default_flow_style=None).rstrip(), "```", "", "</details>", ""]

    if selection:
        out += ["## Selection", ""] + selection_lines(frame, selection[0], selection[1], objective) + [""]

    out += ["## Results", "",
            f"Test metrics at the {label}. Per cell group (size, n): the mean over seeds, its 95% interval across "
            "seeds (Student's t, mean ± t · sd / √seeds; n/a with one seed; not clipped to [0, 100%]), the sd "
            "across seeds (percentage points for accuracies), min, max and the number of seeds."
            + (" Validation metrics (`valid/...`) serve only to choose checkpoints and are not tabulated."
               if any(str(m).startswith("valid/") for m in data.metrics) else ""), ""]
    if "variant" in frame:
        out += ["Swept keys other than n, size and seed vary, so each of their values is its own series "
                "(the `variant` column; one set of figures each). `--select-best KEY` keeps the best value per cell "
                "group instead.", ""]
    metrics = [m for m in (data.metrics or []) if m in frame and not str(m).startswith("valid/")]
    families, singles = {}, []
    for m in metrics:
        match = FAMILY.match(m)
        if match:
            families.setdefault((match.group("family"), match.group("key")), {})[match.group("value")] = m
        else:
            singles.append(m)
    for m in headline_metrics(data) + [m for m in singles if m not in headline_metrics(data)]:
        out += [f"### `{m}`" + (" (%)" if is_rate(m) else ""), "", metric_table(frame, m), ""]
    for (family, key), cols in families.items():
        cols = dict(sorted(cols.items(), key=lambda kv: (0, int(kv[0])) if kv[0].isdigit() else (1, kv[0])))
        unit = " (%, mean [95% interval] over seeds)" if is_rate(family) else " (mean [95% interval] over seeds)"
        out += [f"### `{family}` by {key}{unit}", "", family_table(frame, cols), ""]
    if INDUCTION in frame:
        lines = milestone_lines(frame, run_root)
        if lines:
            out += ["### Tokens to induction", ""] + lines + [""]

    memo = memorization_lines(frame)
    if memo:
        out += ["## Memorization check", ""] + memo + [""]

    out += ["## Comparison: n > 1 against n = 1", ""]
    table, tested = significance_table(frame, headline_metrics(data))
    out += [f"Method: {stats.METHOD}. Each row is n > 1 minus n = 1 at the same size. The verdict says "
            "**resolved** when the 95% interval of the difference excludes 0 (exactly when Welch's p < 0.05), and "
            "**not resolved at this power** otherwise: the data are compatible with no difference at this number "
            "of seeds, which is not evidence of no difference. A comparison needs at least two seeds on both sides.",
            ""]
    if tested:
        out += ["With few seeds the permutation test cannot reach small p-values: the smallest p it can give is "
                "shown beside it (0.33 with 2 + 2 seeds, 0.10 with 3 + 3, 0.03 with 4 + 4). With 2 seeds a side, "
                "Welch's interval has about 2 degrees of freedom (t = 4.3) and is wide.", ""]
    out += [table, ""]

    out += ["## Figures", "", f"Every figure states its budget ({budget_caption(data.frame)}) and which checkpoint "
            "its metrics come from. Each is also saved as PDF, with a CSV of exactly the numbers drawn.", ""]
    if not figures:
        out += ["No figure was drawn.", ""]
    threshold = milestone_threshold(data.frame)
    for name, files in figures.items():
        out += [f"### {name.replace('_', ' ')}", "", _description(name.split(" [")[0], threshold), ""]
        for png in [f for f in files if f.suffix == ".png"]:
            rel = os.path.relpath(Path(png).resolve(), base)
            extras = [os.path.relpath(Path(png).with_suffix(s).resolve(), base) for s in (".pdf", ".csv")]
            out += [f"![{png.stem}]({rel})", "", f"[PDF]({extras[0]}) · [CSV]({extras[1]})", ""]

    out += paper_section(task, data.frame, frame)
    return "\n".join(out).rstrip() + "\n"
