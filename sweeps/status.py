"""Which cells of a sweep are done, and the tables of ``mtplab sweep status`` and the end of ``sweep run``.

One row per cell (per search trial, when a cell has several): the cell's
values, its status (done, running on which worker and host, failed and why,
pending, not queued), the objective, the main metrics and the wall time.
Reading a study never changes it.

Example:
    >>> print(format_table([{"n": 1, "status": "done"}, {"n": 2, "status": "pending"}]))
    n  status
    -  -------
    1  done
    2  pending
"""

from __future__ import annotations

import math
import time

from sweeps.protocol import HOST, is_journal, stale_reason, trials_by_run_key
from sweeps.spec import Cell, SweepSpec


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "+".join(_fmt(v) for v in value)
    return str(value)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain, aligned text table (header, a rule, one line per row).

    Example:
        >>> print(format_table([{"a": 1.5, "b": "x"}], ["b", "a"]))
        b  a
        -  ------
        x  1.5000
    """
    if not rows:
        return "(no cells)"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(),
             "  ".join("-" * w for w in widths).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def cells_not_done(study, all_cells: list[Cell]) -> list[str]:
    """The run keys of the cells without a COMPLETE trial, in cell order.

    Example:
        >>> import optuna
        >>> from sweeps.spec import cells
        >>> s = SweepSpec("x", "x", "polyarith", {"model.n": [1, 2]}, {}, "o", "maximize")
        >>> cells_not_done(optuna.create_study(), cells(s))
        ['n=1', 'n=2']
    """
    from optuna.trial import TrialState

    groups = trials_by_run_key(study)
    return [c.run_key for c in all_cells
            if not any(t.state == TrialState.COMPLETE for t in groups.get(c.run_key, []))]


def main_metrics(spec: SweepSpec, trials) -> list[str]:
    """The metric columns worth a table: the objective, then in-domain/OOD/overall aggregates.

    Example:
        >>> from optuna.trial import create_trial
        >>> s = SweepSpec("x", "x", "polyarith", {}, {}, "accuracy/in_domain", "maximize")
        >>> t = create_trial(value=0.5, user_attrs={"metrics": {"accuracy/ops=1": 1.0, "accuracy/in_domain": 0.5,
        ...                                                     "accuracy/ood": 0.1}})
        >>> main_metrics(s, [t])
        ['accuracy/in_domain', 'accuracy/ood']
    """
    names: list[str] = [spec.objective]
    for t in trials:
        for name in (t.user_attrs.get("metrics") or {}):
            tail = name.rsplit("/", 1)[-1]
            if name not in names and tail in ("in_domain", "ood", "all") and len(names) < 4:
                names.append(name)
    return names


def cell_rows(study, spec: SweepSpec, all_cells: list[Cell], *, now: float | None = None) -> list[dict]:
    """One dict per cell: values, status, worker, objective, main metrics, wall time, tries.

    Example:
        >>> import optuna
        >>> from sweeps.spec import cells
        >>> s = SweepSpec("x", "x", "polyarith", {"model.n": [1]}, {}, "acc", "maximize",
        ...               short_names={"model.n": "n"})
        >>> [r["status"] for r in cell_rows(optuna.create_study(), s, cells(s))]
        ['not queued']
    """
    from optuna.trial import TrialState

    now = time.time() if now is None else now
    groups = trials_by_run_key(study)
    complete = [t for ts in groups.values() for t in ts if t.state == TrialState.COMPLETE]
    metric_names = main_metrics(spec, complete)
    journal = is_journal(study)
    short = spec.short_names
    rows = []
    for cell in all_cells:
        row: dict = {short.get(k, k): v for k, v in cell.values.items()}
        if spec.trials > 1:
            row["trial"] = cell.index
        trials = groups.get(cell.run_key, [])
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        failed = [t for t in trials if t.state == TrialState.FAIL]
        shown = None
        if done:
            shown = done[0]
            row["status"] = "done" if len(done) == 1 else f"done x{len(done)} (DUPLICATE)"
        elif running:
            shown = running[-1]
            ua = shown.user_attrs
            host = ua.get("host", "?")
            status = f"running {ua.get('worker', '?')}@{host}" + (f" pid {ua['pid']}" if ua.get("pid") else "")
            reason = stale_reason(shown, spec, journal=journal, now=now)
            row["status"] = status + (f" (stale: {reason}; retried on the next claim)" if reason else "")
        elif waiting:
            row["status"] = "pending" + (" (retry)" if failed else "")
        elif failed:
            shown = failed[-1]
            counted = [t for t in failed if not t.user_attrs.get("interrupted")]
            final = len(counted) > spec.max_retries or any(t.user_attrs.get("retryable") is False for t in counted)
            why = shown.user_attrs.get("failure") or "worker lost (heartbeat stale)"
            if shown.user_attrs.get("interrupted") and not final:
                row["status"] = "interrupted (resumes on the next sweep run)"
            else:
                row["status"] = f"failed: {why}" if final else f"failed, will retry: {why}"
        else:
            row["status"] = "not queued"
        if shown is not None and done:
            metrics = shown.user_attrs.get("metrics") or {}
            for name in metric_names:
                row[name] = shown.value if name == spec.objective else metrics.get(name)
            wall = shown.user_attrs.get("wall_seconds")
            row["wall_s"] = round(wall) if isinstance(wall, (int, float)) and math.isfinite(wall) else None
        else:
            for name in metric_names:
                row[name] = None
            row["wall_s"] = None
        row["tries"] = len([t for t in trials if t.state != TrialState.WAITING]) or None
        row["_host"] = HOST
        rows.append(row)
    return rows


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def results_table(study, spec: SweepSpec, all_cells: list[Cell]) -> str:
    """The table ``sweep run`` ends with (status, objective, main metrics, wall time; printed by :mod:`sweeps.cli`).

    Example:
        >>> import optuna
        >>> from sweeps.spec import cells
        >>> s = SweepSpec("x", "x", "polyarith", {"model.n": [1]}, {}, "acc", "maximize", short_names={"model.n": "n"})
        >>> print(results_table(optuna.create_study(), s, cells(s)))
        n  status      acc  wall_s  tries
        -  ----------  ---  ------  -----
        1  not queued
    """
    return format_table(_strip(cell_rows(study, spec, all_cells)))


def status_report(study, spec: SweepSpec, all_cells: list[Cell], url: str) -> str:
    """``mtplab sweep status``: a header line, the table, and counts per status.

    Example:
        >>> import optuna
        >>> from sweeps.spec import cells
        >>> s = SweepSpec("x", "x", "polyarith", {"model.n": [1]}, {}, "acc", "maximize", short_names={"model.n": "n"})
        >>> print(status_report(optuna.create_study(), s, cells(s), "mem").splitlines()[-1])
        0 done, 0 running, 0 failed, 1 pending of 1 cells
    """
    from sweeps.storage import redact

    rows = cell_rows(study, spec, all_cells)
    counts = {"done": 0, "running": 0, "failed": 0, "pending": 0}
    for r in rows:
        s = r["status"]
        key = ("done" if s.startswith("done") else "running" if s.startswith("running")
               else "failed" if s.startswith("failed:") else "pending")
        counts[key] += 1
    head = f"study '{spec.study}' ({spec.task}, objective {spec.objective}, {spec.direction}) in {redact(url)}"
    tail = f"{counts['done']} done, {counts['running']} running, {counts['failed']} failed, {counts['pending']} pending of {len(rows)} cells"
    return "\n".join([head, "", format_table(_strip(rows)), "", tail])


__all__ = ["format_table", "cell_rows", "cells_not_done", "results_table", "status_report", "main_metrics"]
