"""One sweep worker process: ``python -m sweeps.worker SPEC --storage URL ...``.

``mtplab sweep run --workers K`` starts K of these (each with its own log
file under ``runs/<study>/logs/``); you never need to start one by hand, but
you can, e.g. to add a worker to a running sweep on this host::

    python -m sweeps.worker sweeps/quickstart.yaml --storage runs/quickstart/journal.log --index 7

The worker claims cells until none is left (:func:`sweeps.runner.worker_loop`, by
the protocol of :mod:`sweeps.protocol`),
trains them with progress bars off (each one as a torchrun job of
``--procs-per-trial`` processes when that is above 1), and exits 0; Ctrl-C marks its trial as
interrupted (resumed by the next run) and exits 130.

Example:
    >>> args = parse_args(["s.yaml", "--storage", "x.log", "--index", "2"])
    >>> args.index, args.threads
    (2, 0)
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The worker's command line.

    Example:
        >>> parse_args(["s.yaml", "--storage", "x.log"]).runs
        'runs'
    """
    p = argparse.ArgumentParser(prog="python -m sweeps.worker", description="one sweep worker process")
    p.add_argument("spec")
    p.add_argument("--storage", required=True, help="storage URL or journal file (as resolved by sweep run)")
    p.add_argument("--study", help="study name (default: the spec's)")
    p.add_argument("--runs", default="runs", help="runs root folder")
    p.add_argument("--index", type=int, default=0, help="worker number (w<index> in the study)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--verbose", action="store_true", help="show training progress bars")
    p.add_argument("--procs-per-trial", type=int, default=1,
                   help="train each trial as a torchrun job of this many processes (sweeps.multiproc)")
    p.add_argument("--trial-threads", type=int, default=0, help="CPU threads of each trial process (OMP_NUM_THREADS)")
    p.add_argument("--hide-gpus", action="store_true", help="trial processes run on the CPU (gloo), GPUs hidden")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one worker until the queue is empty; exit status 0, 2 (bad input) or 130 (Ctrl-C).

    Example:
        >>> main(["/nonexistent.yaml", "--storage", "/tmp/x.log"])
        2
    """
    from lab.errors import UserError

    args = parse_args(argv)
    try:
        from sweeps.multiproc import Plan
        from sweeps.runner import worker_loop
        from sweeps.spec import load_spec

        spec = load_spec(args.spec, study=args.study)
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        plan = Plan(1, args.procs_per_trial, [], args.trial_threads, args.hide_gpus)
        counts = worker_loop(spec, args.storage, Path(args.runs), index=args.index, quiet=not args.verbose, plan=plan)
        print(f"worker w{args.index}: finished ({counts['complete']} complete, {counts['failed']} failed)", flush=True)
        return 0
    except UserError as e:
        print(f"sweep worker: error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"worker w{args.index}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
