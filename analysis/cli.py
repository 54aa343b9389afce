"""``mtplab plot`` and ``mtplab report``: figures and a markdown report of a study.

Both read a study from Optuna storage, never train, and work on a study that
is still running: they draw what has finished and say what is missing.
Plugged into ``mtplab`` through the ``mtplab.commands`` entry point.

Example:
    $ mtplab plot sweeps/quickstart.yaml                 # -> runs/<study>/figures/*.png|pdf|csv
    $ mtplab report sweeps/quickstart.yaml               # -> runs/<study>/report.md (+ figures)
    $ mtplab plot --storage postgresql://me@db/lab --study poly --out figs
    $ mtplab report sweeps/arithmetic-cpu.yaml --select-best train.lr   # best lr per (n, size, seed), on validation
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from analysis.runs import missing_run_folders
from lab.errors import UserError
from lab.paths import atomic_write_text, check_output_dir

CHECKPOINTS = ("auto", "final", "best", "best-by-test")


def resolve(args) -> tuple[str, str]:
    """(storage URL or path, study name) from SPEC and/or --storage/--study.

    The spec is read by the sweeps' own reader (:func:`sweeps.spec.load_spec`)
    and the storage found as ``mtplab sweep`` finds it
    (:func:`sweeps.storage.resolve_storage`): ``--storage``, else the spec's,
    else ``runs/<study>/journal.log``.

    Example:
        >>> resolve(argparse.Namespace(spec=None, storage=None, study="poly"))[1]
        'poly'
        >>> resolve(argparse.Namespace(spec="quickstart", storage="x.log", study=None))  # doctest: +ELLIPSIS
        ('/.../x.log', 'quickstart')
    """
    from sweeps.spec import load_spec
    from sweeps.storage import resolve_storage

    spec = load_spec(args.spec, study=args.study) if args.spec else None
    study = spec.study if spec else args.study
    if not study:
        raise UserError("give a sweep spec file, or --study NAME (with --storage URL)")
    return resolve_storage(args.storage, spec.storage if spec else None, Path("runs"), study), study


def _load(args):
    """Storage -> study -> the runs shown, with the chosen checkpoint's metrics; UserErrors before any writing.

    Returns ``(storage, data, frame, checkpoint, note, run_root, selection)``:
    ``checkpoint`` an :class:`analysis.selection.Checkpoint`, ``note`` the
    (progress, checkpoint and selection) caption parts, ``selection``
    ``(key, sentence)`` or None.
    """
    from analysis.loader import best_per_cell, load_study, with_metrics
    from analysis.selection import (
        choose_checkpoint,
        resolve_key,
        select_best,
        variant_keys,
        with_variant,
    )

    storage_url, study = resolve(args)
    data = load_study(storage_url, study)
    direction = str(data.attrs.get("direction") or "maximize")
    objective = data.attrs.get("objective") or data.spec.get("objective")
    data.frame, searched = best_per_cell(data.frame, direction)
    if searched:
        data.notes.append(searched)
    checkpoint = choose_checkpoint(data.frame, args.checkpoint, task=data.task, objective=objective, study=study)
    frame, selection = data.frame, None
    key = getattr(args, "select_best", None)
    if key:
        key = resolve_key(key, data.swept)
        frame, sentence = select_best(frame, key, data.swept, objective, direction)
        selection = (key, sentence)
    frame = with_metrics(frame, checkpoint.which)
    frame = with_variant(frame, variant_keys(frame, data.swept, exclude=[key] if key else []))
    done, total = data.completed, data.completed + len(data.missing)
    label = checkpoint.label + (f"   ·   {selection[1]}" if selection else "")
    note = (f"{done}/{total} runs finished", label)
    run_root = None
    if "://" not in storage_url:
        p = Path(storage_url)
        run_root = p if p.is_dir() else p.parent
    if getattr(args, "run_root", None):
        run_root = Path(args.run_root)
    gone = missing_run_folders(frame, run_root)
    if gone:  # the study has their numbers; the curves read from run folders cannot include them
        shown = ", ".join(gone[:4]) + (f", ... {len(gone) - 4} more" if len(gone) > 4 else "")
        note = (f"{note[0]}; run folders missing for {len(gone)}, not in the curves: {shown}", note[1])
        print(f"run folders missing for {len(gone)} finished run(s), left out of the curves: {shown}")
    return storage_url, data, frame, checkpoint, note, run_root, selection, gone


def _draw(data, frame, note, run_root, out_dir: Path):
    """Draw into a temporary sibling folder, then move the files into ``out_dir`` (nothing partial)."""
    from analysis import draw

    draw.plan(frame, data.task, data.meta)  # a task with no figure fails before anything is written
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp", dir=out_dir.parent))
    try:
        drawn, skipped = draw.draw_all(frame, tmp, task=data.task, meta=data.meta, note=note[0], checkpoint=note[1],
                                       run_root=run_root)
        out_dir.mkdir(parents=True, exist_ok=True)
        moved = {}
        for name, files in drawn.items():
            moved[name] = []
            for f in files:
                os.replace(f, out_dir / f.name)
                moved[name].append(out_dir / f.name)
        return moved, skipped
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _say_missing(data) -> None:
    done, missing = data.completed, len(data.missing)
    if not missing:
        print(f"all {done} runs of study '{data.name}' finished")
        return
    shown = ", ".join(f"{r.run_key} ({r.state.lower().replace('_', ' ')})" for r in data.missing.head(8).itertuples())
    more = f", ... {missing - 8} more" if missing > 8 else ""
    print(f"{done} of {done + missing} runs finished; drawn from those. missing: {shown}{more}")


def cmd_plot(args) -> int:
    """``mtplab plot``: write the figures that fit the study's task."""
    storage, data, frame, checkpoint, note, run_root, selection, _ = _load(args)
    out = check_output_dir(args.out or f"runs/{data.name}/figures", "--out")
    drawn, skipped = _draw(data, frame, note, run_root, out)
    files = sum(len(v) for v in drawn.values())
    print(f"wrote {len(drawn)} figures ({files} files: PNG, PDF and CSV) to {out} "
          f"[{checkpoint.label}]: {', '.join(drawn)}")
    if selection:
        print(f"selected: {selection[1]}")
    for s in skipped:
        print(f"not drawn: {s}")
    _say_missing(data)
    return 0


def cmd_report(args) -> int:
    """``mtplab report``: draw the figures and write the markdown report that embeds them."""
    from analysis.report import render

    storage, data, frame, checkpoint, note, run_root, selection, gone = _load(args)
    out = Path(args.out or f"runs/{data.name}/report.md")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the report's file name, e.g. {out / 'report.md'}")
    if out.parent.is_file():
        raise UserError(f"--out {out}: {out.parent} is a file, not a folder")
    check_output_dir(out.parent, "--out")
    fig_dir = check_output_dir(args.figures if args.figures else (
        f"runs/{data.name}/figures" if not args.out else out.parent / "figures"), "--figures")
    drawn, skipped = _draw(data, frame, note, run_root, fig_dir)
    skipped = skipped + [f"run folder missing for {g}: its numbers are in the tables, not in the curves" for g in gone]
    text = render(data, frame, figures=drawn, skipped=skipped, report_path=out, storage=storage,
                  checkpoint=checkpoint.label, selection=selection, run_root=run_root)
    atomic_write_text(out, text)
    print(f"wrote {out} with {len(drawn)} figures (in {fig_dir})")
    for s in skipped:
        print(f"not drawn: {s}")
    _say_missing(data)
    return 0


def _common(p) -> None:
    p.add_argument("spec", nargs="?", help="sweep spec (YAML): its study: and storage: say where the study is")
    p.add_argument("--storage", help="Optuna storage: postgresql://..., sqlite:///..., or a journal file "
                                     "(default: the spec's storage, else runs/<study>/journal.log)")
    p.add_argument("--study", help="study name (default: the spec's study:, else the file name)")
    p.add_argument("--checkpoint", choices=CHECKPOINTS, default="auto",
                   help="which checkpoint's test metrics to show: best = the one each run chose on its validation "
                        "objective (valid/<objective>); best-by-test = the best on the test objective "
                        "(paper-faithful); final = the last. auto (default): best when the runs have a validation "
                        "split; for older runs without one, best-by-test for induction (as the paper reports it) and "
                        "final otherwise")
    p.add_argument("--select-best", metavar="KEY",
                   help="a swept key (e.g. train.lr): per group of runs equal in every other swept key "
                        "(n, size, seed, ...), keep the run with the best validation objective and show its test "
                        "metrics (best of K per cell, chosen on validation). Without it each value is its own series")
    p.add_argument("--run-root", help="folder that relative run_dir paths are under "
                                      "(default: tried as given, then beside the journal file)")


def add_parser(sub, bench_sub) -> None:
    """Add ``plot`` and ``report`` to the ``mtplab`` subcommands (the ``mtplab.commands`` entry point).

    Example:
        >>> p = argparse.ArgumentParser(prog="mtplab")
        >>> add_parser(p.add_subparsers(), None)
        >>> p.parse_args(["plot", "spec.yaml", "--out", "figs"]).out
        'figs'
    """
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("plot", help="figures of a study (PNG, PDF and the CSV drawn)", formatter_class=fmt,
                       description="Draw the figures that fit the study's task from what has finished.",
                       epilog="examples:\n  mtplab plot sweeps/quickstart.yaml\n"
                              "  mtplab plot --storage runs/poly/journal.log --study poly --out figs\n"
                              "  mtplab plot --storage postgresql://me@db/lab --study induction --checkpoint final\n"
                              "  mtplab plot sweeps/lr.yaml --select-best train.lr")
    _common(p)
    p.add_argument("--out", help="folder for the figures (default runs/<study>/figures)")
    p.set_defaults(func=cmd_plot)

    r = sub.add_parser("report", help="markdown report of a study: budget, tables, tests, figures, paper values",
                       formatter_class=fmt,
                       description="Write a markdown report (and its figures) from what has finished.",
                       epilog="examples:\n  mtplab report sweeps/quickstart.yaml\n"
                              "  mtplab report --study poly --out results/poly.md\n"
                              "  mtplab report sweeps/lr.yaml --select-best train.lr --checkpoint best-by-test")
    _common(r)
    r.add_argument("--out", help="markdown file (default runs/<study>/report.md)")
    r.add_argument("--figures", help="folder for the figures (default: runs/<study>/figures, "
                                     "or figures/ beside --out)")
    r.set_defaults(func=cmd_report)

    from analysis.compare import add_parser as add_compare
    from analysis.curves import add_parser as add_curves

    add_curves(sub)
    add_compare(sub)
