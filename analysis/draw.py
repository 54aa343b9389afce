"""Which figures fit a study, and drawing them all.

:func:`plan` picks the figures from the metrics the runs have;
:func:`draw_all` draws them (every figure into its own scratch folder, so the
files of each are known exactly) and says which it skipped and why. When a
swept key other than n, size and seed still varies (an lr sweep without
``--select-best``), each of its values gets its own set of figures, named
``FIGURE_KEY=VALUE`` (:func:`analysis.selection.variant_keys`).

Example:
    >>> plan(pd.DataFrame({"n": [1, 2], "size": ["1M"] * 2, "accuracy/ood": [0.1, 0.2]}))
    ['accuracy_vs_size', 'training_curves', 'gain_over_ntp']
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from analysis import figures, induction_figures
from analysis.plotkit import IN_DOMAIN, INDUCTION, OOD
from analysis.taskmeta import TaskMeta
from lab.errors import UserError

METRIC_FIGURES = {"induction_vs_params", "accuracy_vs_ops", "accuracy_vs_size", "gain_over_ntp"}  # + any accuracy_vs_KEY


def plan(frame: pd.DataFrame, task: str = "", meta: TaskMeta | None = None) -> list[str]:
    """The figures that fit the frame's metrics; UserError if none of the task figures does.

    ``meta`` (the task's declared labels, :class:`analysis.taskmeta.TaskMeta`) names the accuracy-vs-difficulty
    figure and its slices: ``accuracy_vs_ops`` for polyarith, ``accuracy_vs_length`` for a task whose slices are
    ``accuracy/length=L``; without it, the frame's ``accuracy/ops=m`` slices.

    Example:
        >>> plan(pd.DataFrame({"n": [1, 2], "size": ["1M"] * 2, "induction_success": [0.1, 0.2]}))
        ['induction_vs_params', 'induction_curves', 'tokens_to_induction', 'training_curves', 'gain_over_ntp']
        >>> plan(pd.DataFrame({"n": [1], "loss": [1.0]}), "copy")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: no figure for task copy: its metrics (loss) have no accuracy/ops=m, accuracy/in_domain, accuracy/ood or induction_success
    """
    figs = []
    induction = INDUCTION in frame and frame[INDUCTION].notna().any()
    if induction:
        figs += ["induction_vs_params", "induction_curves", "tokens_to_induction"]
    meta = meta or TaskMeta.from_frame(frame, task)
    if meta.columns(frame):
        figs.append(meta.figure)
    if any(m in frame and frame[m].notna().any() for m in (IN_DOMAIN, OOD)):
        figs.append("accuracy_vs_size")
    if not figs:
        from analysis.loader import metric_columns

        metrics = ", ".join(metric_columns(frame)[:8]) or "none"
        raise UserError(f"no figure for task {task or 'unknown'}: its metrics ({metrics}) have no accuracy/ops=m, "
                        f"accuracy/in_domain, accuracy/ood or induction_success")
    figs.append("training_curves")
    if figures.gain_metrics(frame):
        figs.append("gain_over_ntp")
    return figs


def _draw_one(fig: str, frame: pd.DataFrame, out_dir: Path, name: str, *, note: str, metric_note: str, run_root,
              show_paper: bool, meta: TaskMeta) -> None:
    if fig == "induction_vs_params":
        induction_figures.induction_vs_params(frame, out_dir, note=metric_note, name=name)
    elif fig == "induction_curves":
        induction_figures.induction_curves(frame, out_dir, note=note, run_root=run_root, name=name)
    elif fig == "tokens_to_induction":
        induction_figures.tokens_to_induction(frame, out_dir, note=note, run_root=run_root, name=name)
    elif fig == meta.figure:
        figures.accuracy_vs_difficulty(frame, out_dir, meta=meta, note=metric_note, show_paper=show_paper, name=name)
    elif fig == "accuracy_vs_size":
        figures.accuracy_vs_size(frame, out_dir, meta=meta, note=metric_note, name=name)
    elif fig == "training_curves":
        figures.training_curves(frame, out_dir, note=note, run_root=run_root, name=name)
    elif fig == "gain_over_ntp":
        figures.gain_over_ntp(frame, out_dir, note=metric_note, name=name)


def draw_all(frame: pd.DataFrame, out_dir, *, task: str = "", meta: TaskMeta | None = None, note: str = "",
             checkpoint: str = "", run_root=None, show_paper: bool = True) -> tuple[dict[str, list[Path]], list[str]]:
    """Draw every figure that fits; returns ``({figure: [files]}, [why some were skipped])``.

    ``note`` goes into every caption, ``checkpoint`` (which checkpoint the
    metrics come from, and any selection) into those of the metric figures.
    With a ``variant`` column (:func:`analysis.selection.with_variant`) each
    variant gets its own figures, keyed ``"FIGURE [variant]"`` and named
    ``FIGURE_variant``.

    Example:
        >>> import tempfile
        >>> f = pd.DataFrame({"size": ["1M"], "size_rank": [1e6], "n": [1], "seed": [0], "trial": [0],
        ...                   "non_embedding": [1e6], "budget_tokens": [1e6], "induction_success": [0.2],
        ...                   "run_dir": [None]})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     files, skipped = draw_all(f, d)
        >>> sorted(files), len(skipped)
        (['induction_vs_params'], 4)
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = meta or TaskMeta.from_frame(frame, task)
    figs = plan(frame, task, meta)
    drawn, skipped = {}, []
    if "variant" in frame and frame["variant"].notna().any():
        parts = [(v, frame[frame["variant"] == v]) for v in sorted(frame["variant"].dropna().unique())]
    else:
        parts = [(None, frame)]
    for variant, part in parts:
        tag = f" [{variant}]" if variant else ""
        part_note = "   ·   ".join(p for p in (variant, note) if p)
        metric_note = "   ·   ".join(p for p in (checkpoint, variant, note) if p)
        for fig in figs:
            name = f"{fig}_{variant}" if variant else fig
            scratch = Path(tempfile.mkdtemp(prefix=".fig-", dir=out_dir))
            try:
                try:
                    _draw_one(fig, part, scratch, name, note=part_note, metric_note=metric_note, run_root=run_root,
                              show_paper=show_paper, meta=meta)
                except UserError as e:
                    skipped.append(f"{fig}{tag}: {str(e).split(': cannot draw')[0]}")
                    continue
                files = []
                for f in sorted(scratch.iterdir(), key=lambda p: (p.stem, ("png", "pdf", "csv").index(p.suffix[1:])
                                                                    if p.suffix[1:] in ("png", "pdf", "csv") else 9)):
                    os.replace(f, out_dir / f.name)
                    files.append(out_dir / f.name)
                drawn[fig + tag] = files
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return drawn, skipped
