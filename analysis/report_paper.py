"""The report's section that puts the paper's reference values beside ours.

Polynomial arithmetic: the paper's Fig. 8 readings (100M) against our
largest size, per m and n, and how the task config differs from the paper's.
Induction: the paper's qualitative Fig. 7 result against our n = 2 - n = 1
difference per size. Both state the budget difference.

Example:
    >>> import pandas as pd
    >>> f = pd.DataFrame({"size": ["1M"] * 2, "size_rank": [1e6] * 2, "n": [1, 2], "non_embedding": [1e6] * 2,
    ...                   "budget_tokens": [3e6] * 2, "induction_success": [0.05, 0.30]})
    >>> lines = paper_section("induction", f, f)
    >>> lines[-2].splitlines()[-1]
    '| 1M | 1M | 5.0 | 30.0 | +25.0 pp | n = 2 far better |'
"""

from __future__ import annotations

import ast

import pandas as pd

from analysis import paper, stats
from analysis.plotkit import INDUCTION, budget_caption, format_count, ops_columns


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _our_budget(frame: pd.DataFrame) -> str:
    return budget_caption(frame).split(":", 1)[1].split(" tokens/run")[0].strip()


def _task_differences(frame: pd.DataFrame) -> list[str]:
    """How the polyarith task config differs from the paper's setup."""
    expected = {"task.p": 7, "task.k": 5, "task.ops": "neg,add,mul,compose",
                "task.train_min_ops": paper.POLYARITH_TRAIN_OPS[0], "task.train_max_ops": paper.POLYARITH_TRAIN_OPS[1],
                "task.test_min_ops": paper.POLYARITH_TEST_OPS[0], "task.test_max_ops": paper.POLYARITH_TEST_OPS[1],
                "task.test_per_op": 2000}

    def text(v):  # an operator set arrives as a list or its repr; numbers as numbers
        if isinstance(v, str) and v.startswith("["):
            v = ast.literal_eval(v)
        return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(int(v) if isinstance(v, float) else v)

    out = []
    for key, want in expected.items():
        if key in frame and frame[key].notna().any():
            got = sorted({text(v) for v in frame[key].dropna()})
            if got != [str(want)]:
                out.append(f"`{key}` = {'; '.join(got)} (paper: {want})")
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


def paper_section(task: str, all_runs: pd.DataFrame, frame: pd.DataFrame) -> list[str]:
    """The markdown lines of "The paper's reference values" (empty when the task is not one of the paper's).

    ``all_runs`` is every finished run (for the budget and the task config),
    ``frame`` the runs and metrics the report shows.

    Example:
        >>> paper_section("copy", pd.DataFrame(), pd.DataFrame({"loss": [1.0]}))
        []
    """
    budget = all_runs["budget_tokens"].max() if "budget_tokens" in all_runs else None
    pooled = []
    if "variant" in frame and frame["variant"].nunique() > 1:
        pooled = ["Our values below pool the runs of every " + ", ".join(sorted(
            {v.split("=")[0] for var in frame["variant"].dropna() for v in var.split(",")})) +
            " value (use --select-best to keep one run per cell).", ""]
    out = []
    if task == "polyarith" or ops_columns(frame):
        out += ["## The paper's reference values", ""]
        diffs = _task_differences(all_runs)
        out += [("Task setup as in the paper (F7[X]/(X^5), training m = 1..5, test m = 1..10) except: "
                 + "; ".join(diffs) + ".") if diffs else
                "Task setup as in the paper: F7[X]/(X^5), training m = 1..5, test m = 1..10.", ""]
        sizes = ", ".join(frame.groupby("size", sort=False)["size_rank"].first().sort_values().index)
        out += [f"**Budget difference:** ours {_our_budget(all_runs)} "
                f"tokens per run against the paper's {paper.format_tokens(paper.PAPER_TOKENS_PER_RUN)}: "
                f"{paper.budget_ratio(budget)}, and the paper's models are 30M and 100M non-embedding parameters "
                f"(ours: {sizes}). Levels can differ from the budget alone; compare the shape of the curves and the "
                "sign and size of the n > 1 gain.", ""]
        out += pooled + _paper_polyarith(frame) + [""]
    elif task == "induction" or INDUCTION in frame:
        out += ["## The paper's reference values", ""]
        out += [f"**Budget difference:** ours {_our_budget(all_runs)} "
                f"tokens per run against the paper's {paper.format_tokens(paper.PAPER_TOKENS_PER_RUN)}: "
                f"{paper.budget_ratio(budget)} (the paper also trains up to 90 epochs and reports the best "
                "checkpoint by the test metric).", ""]
        out += pooled + _paper_induction(frame) + [""]
    return out
