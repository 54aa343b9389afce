"""The markdown report of a study: spec and budget, tables, tests, figures, the paper beside ours.

:func:`render` turns a loaded study (:class:`analysis.loader.StudyData`)
and the figures already drawn into one markdown text. It states what is
still missing, so a report of a running study is honest about it.

Example:
    >>> import pandas as pd
    >>> f = pd.DataFrame({"size": ["1M"] * 2, "size_rank": [1e6] * 2, "n": [1, 1], "seed": [0, 1],
    ...                   "accuracy/in_domain": [0.2, 0.4]})
    >>> print(metric_table(f, "accuracy/in_domain"))
    | size | n | mean | sd | min | max | seeds |
    |---|---|---|---|---|---|---|
    | 1M | 1 | 30.00% | 14.14 | 20.00% | 40.00% | 2 |
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
from analysis.figures import INDUCTION, IN_DOMAIN, OOD, budget_caption, format_count, ops_columns
from analysis.loader import StudyData, redact

FAMILY = re.compile(r"^(?P<family>.+)/(?P<key>\w+)=(?P<value>[^/]+)$")
DESCRIPTIONS = {
    "induction_vs_params": "Induction success (%) against non-embedding parameters (log axis), one colour per n; "
                           "every seed a marker, the mean over seeds a line (the paper's Figure 7).",
    "accuracy_vs_ops": "Exact-match accuracy (%) against the number of operations m, one panel per size, one "
                       "colour per n; the out-of-domain region is shaded; on a 100M panel the paper's Fig. 8 "
                       "readings are dashed (the paper's Figures 8 and S16).",
    "accuracy_vs_size": "In-domain and out-of-domain accuracy (%) against model size, one colour per n.",
    "training_curves": "Training loss (nats) and top-1 accuracy (%) of each head against training tokens, "
                       "one column per n, one line per seed (from the run folders' metrics.jsonl).",
    "gain_over_ntp": "Gain of each n > 1 over n = 1 at each size in percentage points: difference of the seed "
                     "means with +-1 Welch standard error, and each seed's difference to the n = 1 mean.",
}


def is_rate(metric: str) -> bool:
    """Whether a metric is a fraction to show as a percentage.

    Example:
        >>> is_rate("accuracy/ops=3"), is_rate("induction_success"), is_rate("loss")
        (True, True, False)
    """
    return "acc" in metric or "success" in metric


def _fmt(value, rate: bool, *, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if rate:
        return f"{100 * value:+.2f}%" if sign else f"{100 * value:.2f}%"
    return f"{value:+.4g}" if sign else f"{value:.4g}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metric_table(frame: pd.DataFrame, metric: str) -> str:
    """Mean, spread (sd; in points for rates), min, max and seeds of one metric per (size, n).

    Example:
        >>> f = pd.DataFrame({"size": ["1M"], "n": [2], "loss": [1.5]})
        >>> print(metric_table(f, "loss").splitlines()[-1])
        | 1M | 2 | 1.5 | – | 1.5 | 1.5 | 1 |
    """
    rate = is_rate(metric)
    summary = stats.summarize(frame, metric)
    rows = [[r["size"], int(r["n"]), _fmt(r["mean"], rate),
             "–" if pd.isna(r["sd"]) else (f"{100 * r['sd']:.2f}" if rate else f"{r['sd']:.3g}"),
             _fmt(r["min"], rate), _fmt(r["max"], rate), int(r["seeds"])] for _, r in summary.iterrows()]
    return _table(["size", "n", "mean", "sd", "min", "max", "seeds"], rows)


def family_table(frame: pd.DataFrame, columns: dict) -> str:
    """One wide table for a metric family (``accuracy/ops=1..10``): mean +- sd per (size, n).

    Example:
        >>> f = pd.DataFrame({"size": ["1M"] * 2, "n": [1, 1], "accuracy/ops=1": [0.5, 0.7]})
        >>> print(family_table(f, {"1": "accuracy/ops=1"}).splitlines()[-1])
        | 1M | 1 | 2 | 60.0 ± 14.1 |
    """
    first = next(iter(columns.values()))
    rate = is_rate(first)
    scale = 100 if rate else 1
    key = FAMILY.match(first).group("key") if FAMILY.match(first) else ""
    groups = frame.groupby(["size", "n"], sort=False)
    order = stats.summarize(frame, first)[["size", "n"]].values.tolist() if first in frame else []
    rows = []
    for size, n in order:
        g = groups.get_group((size, n))
        cells = []
        for col in columns.values():
            v = g[col].dropna() * scale if col in g else pd.Series(dtype=float)
            if v.empty:
                cells.append("–")
            else:
                cells.append(f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v.mean():.1f}")
        rows.append([size, int(n), int(g[first].notna().sum())] + cells)
    return _table(["size", "n", "seeds"] + [f"{key}={k}" for k in columns], rows)


def headline_metrics(data: StudyData) -> list[str]:
    """The metrics the significance tests and the gain figure use: the objective plus the task's summaries.

    Example:
        >>> headline_metrics(StudyData("s", pd.DataFrame({"accuracy/ood": [0.1]}), pd.DataFrame(),
        ...                            attrs={"objective": "accuracy/in_domain"}))
        ['accuracy/ood']
    """
    wanted = [data.attrs.get("objective"), IN_DOMAIN, OOD, INDUCTION]
    return [m for m in dict.fromkeys(w for w in wanted if w) if m in data.frame and data.frame[m].notna().any()]


def significance_table(frame: pd.DataFrame, metrics: list[str]) -> tuple[str, bool]:
    """Welch comparison of each n > 1 against n = 1 per size and metric; (markdown, any test run).

    Example:
        >>> f = pd.DataFrame({"size": ["1M"] * 4, "size_rank": [1e6] * 4, "n": [1, 1, 2, 2],
        ...                   "accuracy/ood": [0.1, 0.2, 0.4, 0.5]})
        >>> text, tested = significance_table(f, ["accuracy/ood"])
        >>> tested, text.splitlines()[-1].split(" | ")[3]
        (True, '+30.00 pp')
    """
    rows, tested = [], False
    for metric in metrics:
        rate = is_rate(metric)
        for _, g in stats.gains(frame, metric).iterrows():
            gain = f"{100 * g['gain']:+.2f} pp" if rate else f"{g['gain']:+.4g}"
            if pd.isna(g["p"]):
                rows.append([metric, g["size"], f"{int(g['n'])} vs 1", gain, "–", "–", "–",
                             f"not tested ({int(g['seeds'])} / {int(g['seeds_baseline'])} seeds; needs 2 each)",
                             f"{int(g['seeds'])} / {int(g['seeds_baseline'])}"])
                continue
            tested = True
            se = f"{100 * g['se']:.2f}" if rate else f"{g['se']:.3g}"
            t = "∞" if math.isinf(g["t"]) else f"{g['t']:.2f}"
            df = "–" if pd.isna(g["df"]) else f"{g['df']:.1f}"
            p = f"{g['p']:.3f}" + (f" (min. possible {g['p_min']:.2f})" if not pd.isna(g["p_min"]) else "")
            rows.append([metric, g["size"], f"{int(g['n'])} vs 1", gain, se, t, df, p,
                         f"{int(g['seeds'])} / {int(g['seeds_baseline'])}"])
    if not rows:
        return "No size has both n = 1 and n > 1 finished yet.", False
    return _table(["metric", "size", "n", "gain", "s.e.", "t", "df", "p", "seeds (n / n=1)"], rows), tested


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


def _our_budget(frame: pd.DataFrame) -> str:
    return budget_caption(frame).split(":", 1)[1].split(" tokens/run")[0].strip()


def _sizes_table(frame: pd.DataFrame) -> str:
    rows = []
    cols = {"d_model": "model.d_model", "layers": "model.layers", "heads": "model.n_heads"}
    for (size, n), g in frame.groupby(["size", "n"], sort=False):
        shape = " / ".join(str(g[c].iloc[0]) if c in g else "?" for c in cols.values())
        rows.append([size, int(n), shape, ", ".join(sorted({str(k) for k in g["head_kind"].dropna()})) or "?",
                     format_count(g["non_embedding"].mean()) if g["non_embedding"].notna().any() else "?",
                     format_count(g["params_total"].mean()) if "params_total" in g and g["params_total"].notna().any()
                     else "?",
                     ", ".join(str(int(s)) for s in sorted(g["seed"].dropna()))])
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


def _task_differences(frame: pd.DataFrame) -> list[str]:
    """How the polyarith task config differs from the paper's setup."""
    expected = {"task.train_min_ops": paper.POLYARITH_TRAIN_OPS[0], "task.train_max_ops": paper.POLYARITH_TRAIN_OPS[1],
                "task.test_min_ops": paper.POLYARITH_TEST_OPS[0], "task.test_max_ops": paper.POLYARITH_TEST_OPS[1],
                "task.test_per_op": 2000}
    out = []
    for key, want in expected.items():
        if key in frame and frame[key].notna().any():
            got = sorted({int(v) for v in frame[key].dropna()})
            if got != [want]:
                out.append(f"`{key}` = {', '.join(map(str, got))} (paper: {want})")
    return out


def _paper_polyarith(frame: pd.DataFrame) -> list[str]:
    cols = ops_columns(frame)
    sizes = frame.groupby("size", sort=False)["size_rank"].first().sort_values()
    size = "100M" if "100M" in sizes.index else sizes.index[-1]
    ns = [n for n in (1, 2, 4)]
    at = frame[frame["size"] == size]
    lines = [paper.POLYARITH_NOTE, ""]
    if size != "100M":
        lines.append(f"We have no 100M run, so ours is our largest size, **{size}** "
                     f"({format_count(at['non_embedding'].mean())} non-embedding parameters). "
                     "Compare the shape of the curves and the sign of the n > 1 gain, not the levels.")
    else:
        lines.append("Ours is our 100M size.")
    lines.append("")
    header = ["m"] + [f"paper n={n}" for n in ns] + [f"ours n={n} ({size})" for n in ns]
    rows = []
    for m in sorted(set(paper.POLYARITH_100M) | set(cols)):
        row = [f"{m}" + (" (OOD)" if m > paper.POLYARITH_TRAIN_OPS[1] else "")]
        for n in ns:
            ref = paper.polyarith_reference(m, n)
            row.append("–" if ref is None else (f"~{ref:g}" if m >= paper.POLYARITH_APPROX_FROM else f"{ref:g}"))
        for n in ns:
            v = at.loc[at["n"] == n, cols[m]].dropna() if m in cols else pd.Series(dtype=float)
            row.append(f"{100 * v.mean():.1f} ({len(v)})" if len(v) else "–")
        rows.append(row)
    lines.append(_table(header, rows))
    lines.append("")
    lines.append("Accuracy in %; ours is the mean over seeds (number of seeds in brackets).")
    return lines


def _paper_induction(frame: pd.DataFrame) -> list[str]:
    lines = [paper.INDUCTION_NOTE, "", "Ours, n = 2 against n = 1 (mean over seeds, induction success in %):", ""]
    rows = []
    g = stats.gains(frame, INDUCTION)
    for _, r in g[g["n"] == 2].iterrows():
        at = frame[frame["size"] == r["size"]]
        m1 = at.loc[at["n"] == 1, INDUCTION].mean()
        m2 = at.loc[at["n"] == 2, INDUCTION].mean()
        if r["size"] not in paper.INDUCTION_SIZES:
            paper_says = "–"
        elif paper.INDUCTION_SIZES.index(r["size"]) <= paper.INDUCTION_SIZES.index("30M"):
            paper_says = "n = 2 far better"
        else:
            paper_says = "no advantage"
        rows.append([r["size"], format_count(at["non_embedding"].mean()), f"{100 * m1:.1f}", f"{100 * m2:.1f}",
                     f"{100 * r['gain']:+.1f} pp", paper_says])
    if rows:
        lines.append(_table(["size", "non-emb. params", "ours n=1", "ours n=2", "ours gain", "paper (Fig. 7)"], rows))
    else:
        lines.append("No size has both n = 1 and n = 2 finished yet.")
    return lines


def render(data: StudyData, frame: pd.DataFrame, *, figures: dict, skipped: list, report_path, storage: str,
           checkpoint: str) -> str:
    """The report's markdown.

    ``frame`` is ``data.frame`` with the chosen checkpoint's metrics
    (:func:`analysis.loader.with_metrics`); ``figures`` maps figure names to
    the files :func:`analysis.figures.draw_all` wrote; links are made
    relative to ``report_path``.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"trial": [0], "size": ["1M"], "size_rank": [1e6], "n": [1], "seed": [0],
        ...                   "budget_tokens": [1e6], "non_embedding": [1e6], "head_kind": ["parallel"],
        ...                   "induction_success": [0.25]})
        >>> d = StudyData("demo", f, pd.DataFrame(columns=["run_key", "cell_key", "state", "trial"]),
        ...               attrs={"task": "induction"}, metrics=["induction_success"])
        >>> text = render(d, f, figures={}, skipped=[], report_path="r.md", storage="j.log", checkpoint="final")
        >>> "| 1M | 1 | 25.00% | – | 25.00% | 25.00% | 1 |" in text
        True
    """
    base = Path(report_path).resolve().parent
    attrs, spec = data.attrs, data.spec
    task = data.task
    out = [f"# Study `{data.name}`: {task}", ""]
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    out += [f"Written by `mtplab report` on {stamp} from storage `{redact(storage)}`. "
            f"Metrics are from the **{checkpoint} checkpoint** of each run.", ""]
    if spec.get("description"):
        out += [f"> {spec['description']}", ""]

    out += ["## Status", ""] + _missing_section(data) + [""]
    for note in data.notes:
        out.append(f"- Note: {note}")
    if skipped:
        out += [f"- Figure not drawn: {s}" for s in skipped]
    out.append("")

    out += ["## Spec and budget", ""]
    objective = attrs.get("objective") or spec.get("objective")
    direction = attrs.get("direction") or spec.get("direction")
    out.append(f"- **Task:** {task}; **objective:** `{objective or '?'}`" + (f" ({direction})" if direction else ""))
    if attrs.get("spec_path"):
        out.append(f"- Spec file: `{attrs['spec_path']}`")
    out += _budget_lines(data) + [""]
    out += [_sizes_table(data.frame), ""]
    if spec:
        out += ["<details><summary>The sweep spec</summary>", "", "```yaml",
                yaml.safe_dump(spec, sort_keys=False, default_flow_style=None).rstrip(), "```", "", "</details>", ""]

    out += ["## Results", "",
            "Per cell group (size, n): mean over seeds, sd across seeds (percentage points for accuracies), "
            "min, max and the number of seeds.", ""]
    metrics = [m for m in (data.metrics or []) if m in frame]
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
        unit = " (%, mean ± sd over seeds)" if is_rate(family) else " (mean ± sd over seeds)"
        out += [f"### `{family}` by {key}{unit}", "", family_table(frame, cols), ""]

    memo = memorization_lines(frame)
    if memo:
        out += ["## Memorization check", ""] + memo + [""]

    out += ["## Significance: n > 1 against n = 1", ""]
    table, tested = significance_table(frame, headline_metrics(data))
    out += [f"Method: {stats.METHOD}. Gains are differences of seed means; s.e. is the Welch standard error. "
            "A test needs at least two seeds in both cells.", ""]
    if tested and stats._scipy_stats is None:
        out += ["With few seeds a permutation test cannot reach small p-values: the smallest p it can give is shown "
                "beside each p (0.33 with 2 + 2 seeds, 0.10 with 3 + 3, 0.03 with 4 + 4). Only more seeds can make "
                "a difference significant at 0.05.", ""]
    out += [table, ""]

    out += ["## Figures", "", f"Every figure states its budget ({budget_caption(data.frame)}). "
            "Each is also saved as PDF, with a CSV of exactly the numbers drawn.", ""]
    if not figures:
        out += ["No figure was drawn.", ""]
    for name, files in figures.items():
        out += [f"### {name.replace('_', ' ')}", "", DESCRIPTIONS.get(name, ""), ""]
        for png in [f for f in files if f.suffix == ".png"]:
            rel = os.path.relpath(Path(png).resolve(), base)
            extras = [os.path.relpath(Path(png).with_suffix(s).resolve(), base) for s in (".pdf", ".csv")]
            out += [f"![{png.stem}]({rel})", "", f"[PDF]({extras[0]}) · [CSV]({extras[1]})", ""]

    if task == "polyarith" or ops_columns(frame):
        out += ["## The paper's reference values", ""]
        diffs = _task_differences(data.frame)
        out += [("Task setup as in the paper (F7[X]/(X^5), training m = 1..5, test m = 1..10) except: "
                 + "; ".join(diffs) + ".") if diffs else
                "Task setup as in the paper: F7[X]/(X^5), training m = 1..5, test m = 1..10.", ""]
        out += [f"**Budget difference:** ours {_our_budget(data.frame)} "
                f"tokens per run against the paper's {paper.format_tokens(paper.PAPER_TOKENS_PER_RUN)}: "
                f"{paper.budget_ratio(data.frame['budget_tokens'].max() if 'budget_tokens' in data.frame else None)}, "
                f"and the paper's models are 30M and 100M non-embedding parameters (ours: "
                f"{', '.join(frame.groupby('size', sort=False)['size_rank'].first().sort_values().index)}). "
                "Levels can differ from the budget alone; compare the shape of the curves and the sign and size of "
                "the n > 1 gain.", ""]
        out += _paper_polyarith(frame) + [""]
    elif task == "induction" or INDUCTION in frame:
        out += ["## The paper's reference values", ""]
        out += [f"**Budget difference:** ours {_our_budget(data.frame)} "
                f"tokens per run against the paper's {paper.format_tokens(paper.PAPER_TOKENS_PER_RUN)}: "
                f"{paper.budget_ratio(data.frame['budget_tokens'].max() if 'budget_tokens' in data.frame else None)}"
                " (the paper also trains up to 90 epochs and reports the best checkpoint).", ""]
        out += _paper_induction(frame) + [""]
    return "\n".join(out).rstrip() + "\n"
