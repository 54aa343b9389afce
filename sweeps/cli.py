"""``mtplab sweep run`` and ``mtplab sweep status`` (loaded through the ``mtplab.commands`` entry point).

Example:
    >>> from lab.cli import main
    >>> main(["sweep", "run", "/nonexistent.yaml"])
    2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.errors import UserError

RUN_EPILOG = """examples:
  mtplab sweep run sweeps/quickstart.yaml
  mtplab sweep run sweeps/arithmetic-cpu.yaml --workers 2
  mtplab sweep run sweeps/arithmetic.yaml --storage postgresql://me:pw@db-host/mtplab --workers 4 --gpus 0,1,2,3
  mtplab sweep run sweeps/induction.yaml --gpus 0,1,2,3,4,5,6,7 --gpus-per-trial 2   # 4 trials of 2 GPUs
  mtplab sweep run sweeps/quickstart.yaml --procs-per-trial 2                        # CPU: 2 processes (gloo)
  mtplab sweep run sweeps/quickstart.yaml --retry-failed

Each grid cell is trained exactly once, however many workers or hosts run the
same command against the same storage; a killed worker's cell is retried and
resumes from its checkpoint. With --gpus-per-trial G (or --procs-per-trial P
on the CPU) each trial is a torchrun job of G (P) processes, and worker i owns
the GPUs gpus[i*G:(i+1)*G]. See sweeps/README.md."""

STATUS_EPILOG = """examples:
  mtplab sweep status sweeps/quickstart.yaml
  mtplab sweep status sweeps/arithmetic.yaml --storage postgresql://me:pw@db-host/mtplab"""


def parse_gpus(text: str | None) -> list[str]:
    """``"0,1,2,3"`` -> ``["0", "1", "2", "3"]`` (the CUDA_VISIBLE_DEVICES of worker i is gpus[i % len]).

    Example:
        >>> parse_gpus("0, 1"), parse_gpus(None)
        (['0', '1'], [])
    """
    if text is None:
        return []
    gpus = [g.strip() for g in text.split(",")]
    if not gpus or any(not g for g in gpus):
        raise UserError(f"--gpus expects a comma-separated list of GPU ids, e.g. 0,1,2,3; got '{text}'")
    return gpus


def cmd_run(args) -> int:
    """``mtplab sweep run SPEC``: validate, queue, run the workers, print the results table.

    Example:
        >>> from lab.cli import main
        >>> main(["sweep", "run", "/nonexistent.yaml", "--workers", "2"])
        2
    """
    from sweeps.runner import run_sweep
    from sweeps.spec import load_spec
    from sweeps.storage import resolve_storage

    gpus = parse_gpus(args.gpus)
    spec = load_spec(args.spec, study=args.study)  # everything is validated before storage is touched
    # run_sweep plans the workers (sweeps.multiproc.plan_workers) before it touches the storage
    rc = run_sweep(spec, storage=args.storage, runs_root=Path(args.runs), workers=args.workers, gpus=gpus,
                   gpus_per_trial=args.gpus_per_trial, procs_per_trial=args.procs_per_trial,
                   retry_failed=args.retry_failed, out=lambda *a: print(*a, flush=True))
    print_results(spec, resolve_storage(args.storage, spec.storage, Path(args.runs), spec.study))
    if args.report:
        write_report(spec, args)
    return rc


def print_results(spec, url: str) -> None:
    """The table ``sweep run`` ends with (one row per cell), and which cells are not done.

    Example (after ``run_sweep``, as :func:`cmd_run` does)::

        print_results(spec, "runs/quickstart/journal.log")
        # n  size  seed  status  accuracy/in_domain  ...
        # 1 of 3 cells not done (n=4,size=1M,seed=0); see: mtplab sweep status sweeps/quickstart.yaml
    """
    from sweeps.spec import cells
    from sweeps.status import cells_not_done, results_table
    from sweeps.study import open_study

    study, all_cells = open_study(spec, url), cells(spec)
    print("", results_table(study, spec, all_cells), sep="\n", flush=True)
    missing = cells_not_done(study, all_cells)
    if missing:
        print(f"{len(missing)} of {len(all_cells)} cells not done ({', '.join(missing[:3])}"
              f"{', ...' if len(missing) > 3 else ''}); see: mtplab sweep status {spec.path}", flush=True)


def write_report(spec, args) -> None:
    """The figures and the markdown report of the study, written where ``mtplab report`` writes them.

    Runs the ``report`` subcommand (the analysis room) through the CLI, so
    the sweeps room does not import analysis; a study with cells still
    missing gets a report of what finished.
    """
    from lab.cli import main
    from sweeps.storage import resolve_storage

    folder = Path(args.runs) / spec.study
    url = resolve_storage(args.storage, spec.storage, Path(args.runs), spec.study)
    print("")
    if main(["report", str(spec.path), "--storage", url, "--study", spec.study,
             "--out", str(folder / "report.md"), "--figures", str(folder / "figures")]) != 0:
        print(f"report: not written (see above); retry with: mtplab report {spec.path}", flush=True)


def cmd_status(args) -> int:
    """``mtplab sweep status SPEC``: the cells with their status, worker, host and metric.

    Example:
        >>> from lab.cli import main
        >>> main(["sweep", "status", "/nonexistent.yaml"])
        2
    """
    from sweeps.spec import cells, load_spec
    from sweeps.status import status_report
    from sweeps.storage import resolve_storage
    from sweeps.study import open_study

    spec = load_spec(args.spec, study=args.study)
    url = resolve_storage(args.storage, spec.storage, Path(args.runs), spec.study)
    study = open_study(spec, url)
    print(status_report(study, spec, cells(spec), url))
    return 0


def _common(p) -> None:
    p.add_argument("spec", help="sweep spec (YAML), e.g. sweeps/quickstart.yaml, or a shipped spec's name")
    p.add_argument("--storage", help="postgresql://user:pass@host/db, sqlite:///file.db or a journal file "
                                     "(default: the spec's storage, else RUNS/<study>/journal.log)")
    p.add_argument("--study", help="study name (default: the spec's `study`, else the file name)")
    p.add_argument("--runs", default="runs", help="where run folders go: RUNS/<study>/<cell>/ (default: runs)")


def add_parser(sub, bench_sub) -> None:
    """Add ``sweep run`` and ``sweep status`` to the ``mtplab`` command line.

    Example:
        >>> from lab.cli import build_parser
        >>> args = build_parser().parse_args(["sweep", "run", "x.yaml", "--workers", "2"])
        >>> args.workers, args.func is cmd_run
        (2, True)
    """
    fmt = argparse.RawDescriptionHelpFormatter
    s = sub.add_parser("sweep", help="run an Optuna study over a grid of configs (n x size x seed x ...)",
                       formatter_class=fmt, description="Sweeps: a spec (YAML) -> an Optuna study -> one run per cell.",
                       epilog="examples:\n  mtplab sweep run sweeps/quickstart.yaml\n"
                              "  mtplab sweep status sweeps/quickstart.yaml")
    s.set_defaults(func=lambda args: (s.print_help(), 2)[1])
    ssub = s.add_subparsers(dest="sweep_command", metavar="ACTION", parser_class=type(s))

    r = ssub.add_parser("run", help="run (or continue) a sweep: every cell once, with K workers",
                        formatter_class=fmt, epilog=RUN_EPILOG)
    _common(r)
    r.add_argument("--workers", type=int, help="worker processes on this host (default 1, or one per --gpus id)")
    r.add_argument("--gpus", help="comma-separated GPU ids; worker i gets CUDA_VISIBLE_DEVICES=gpus[i %% len]")
    r.add_argument("--gpus-per-trial", type=int, metavar="G",
                   help="each trial a torchrun job on G GPUs: worker i owns gpus[i*G:(i+1)*G] (default --workers: "
                        "number of GPUs / G; GPUs: --gpus, else every visible one)")
    r.add_argument("--procs-per-trial", type=int, metavar="P",
                   help="each trial a torchrun job of P CPU processes (gloo); --workers x P must fit the cores")
    r.add_argument("--no-report", dest="report", action="store_false",
                   help="do not write the figures and report at the end (mtplab report SPEC does it later)")
    r.add_argument("--retry-failed", action="store_true",
                   help="give cells that failed for good (out of retries, or a config error) one more try")
    r.set_defaults(func=cmd_run)

    st = ssub.add_parser("status", help="table of the cells: done, running (worker, host), failed, pending",
                         formatter_class=fmt, epilog=STATUS_EPILOG)
    _common(st)
    st.set_defaults(func=cmd_status)
