"""One claimed trial, trained: its cell's run folder (resumed when it has one), its value and attributes told.

Steps 3 and 4 of the protocol in :mod:`sweeps.protocol`: the run folder is
``<runs>/<study>/<run_key>/``, keyed by the cell, not the trial number, so a
retried cell resumes from the checkpoint its failed attempt left
(``lab.train.resume(folder)``); a fresh cell starts a run there. The value is
the objective on validation where the task has a validation split
(:func:`value_key`), never a test number the sampler could tune on.

Example:
    >>> value_key("accuracy/in_domain", {"valid/accuracy/in_domain": 0.4})
    'valid/accuracy/in_domain'
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from lab.errors import UserError
from sweeps.multiproc import TrialProcessError
from sweeps.protocol import Heartbeat, Worker, fail_trial, frozen_trial
from sweeps.spec import SweepSpec
from sweeps.storage import kind_of
from sweeps.study import grid_distributions, suggest

_ENV: dict | None = None


def _environment() -> dict:
    global _ENV
    if _ENV is None:
        from lab.checkpoint import environment

        import optuna

        _ENV = {**environment(), "optuna": optuna.__version__}
    return _ENV


def checkpoint_step(folder: Path) -> int | None:
    """The step of the checkpoint in a run folder (memory-mapped: cheap even for big models), or None.

    Example:
        >>> checkpoint_step(Path("/nonexistent")) is None
        True
    """
    import torch

    path = Path(folder) / "checkpoint.pt"
    if not path.is_file():
        return None
    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["step"])
    except Exception:
        return None


def finite(x) -> bool:
    """Whether ``x`` is a finite int or float (not None, not nan), e.g. ``finite(0.5)`` but not ``finite(None)``."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def value_key(objective: str, metrics: dict) -> str:
    """The metric a trial's value (and its intermediate values) is: the objective on validation where there is one.

    Optuna's sampler and pruners act on the value, so it must never be a
    test-set number when a validation number exists.

    Example:
        >>> value_key("accuracy/in_domain", {"accuracy/in_domain": 0.5, "valid/accuracy/in_domain": 0.4})
        'valid/accuracy/in_domain'
        >>> value_key("accuracy/in_domain", {"accuracy/in_domain": 0.5})
        'accuracy/in_domain'
    """
    return f"valid/{objective}" if f"valid/{objective}" in metrics else objective


def run_trial(study, trial, spec: SweepSpec, url: str, runs_root: Path, worker: Worker, *, quiet: bool = True,
              plan=None):
    """Train the cell of a claimed trial in its run folder (resuming it if it has one) and tell the result.

    Returns the finished trial (a FrozenTrial). Ctrl-C marks the trial FAIL
    with ``interrupted`` (not counted as a failure; the next run resumes it)
    and re-raises. With a ``plan`` (:class:`sweeps.multiproc.Plan`) of
    several processes per trial the run is a torchrun job of that many
    processes (:func:`sweeps.multiproc.train_in_processes`), else it trains
    in this process.

    Example (what :func:`worker_loop` does with each claim)::

        trial, _ = claim(study, spec, url, cells(spec), Worker.here(0))
        frozen = run_trial(study, trial, spec, url, Path("runs"), Worker.here(0))
        frozen.state, frozen.value, frozen.user_attrs["run_dir"]
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from generators import registry
    from lab import checkpoint as ckpt
    from lab import train
    from lab.config import build_run_config

    ua = trial.user_attrs
    run_key = ua["run_key"]
    folder = Path(runs_root) / spec.study / run_key
    t0 = time.time()
    outcome: dict = {}
    with Heartbeat(study, trial, journal=kind_of(url) == "journal",
                   interval=spec.heartbeat_seconds, grace=spec.grace_seconds):
        try:
            for key, dist in grid_distributions(spec).items():
                if key in ua["cell"]:
                    suggest(trial, key, dist)
            searched = {p.name: suggest(trial, p.name, p.distribution()) for p in spec.search}
            config = build_run_config(registry.get(spec.task), {**spec.fixed, **ua["cell"], **searched})
            resume = (folder / "config.json").exists()
            resumed_from = None

            def report(step: int, metrics: dict) -> None:  # learning curves for optuna-dashboard
                value = metrics.get(value_key(spec.objective, metrics))
                if finite(value):
                    with contextlib.suppress(Exception):  # a reclaimed or finished trial: the run goes on
                        trial.report(float(value), step)

            if resume:
                stored = ckpt.read_config(folder, registry.get)
                if stored.to_dict() != config.to_dict():
                    raise UserError(f"run folder {folder} holds a different config than cell {run_key}; "
                                    f"move it away to retrain the cell")
                resumed_from = checkpoint_step(folder)
            if plan is not None and plan.procs > 1:
                from sweeps.multiproc import train_in_processes

                summary = train_in_processes(config, folder, procs=plan.procs, resume=resume, report=report,
                                             threads=plan.threads, hide_gpus=plan.hide_gpus)
            elif resume:
                summary = train.resume(folder, quiet=quiet, on_eval=report)
            else:
                summary = train.run(config, folder, quiet=quiet, on_eval=report)
            value = summary["metrics"].get(value_key(spec.objective, summary["metrics"]))
            best, by_test = summary.get("best") or {}, summary.get("best_by_test") or {}
            outcome = {
                "config": config.to_dict(), "metrics": summary["metrics"], "best_metrics": best.get("metrics"),
                "best_step": best.get("step"), "best_by_test_metrics": by_test.get("metrics"),
                "best_by_test_step": by_test.get("step"), "milestones": summary.get("milestones") or {},
                "selection": summary.get("selection"), "params": summary["params"], "tokens_seen": summary["tokens_seen"],
                "step": summary["step"], "wall_seconds": summary["wall_seconds"], "device": summary["device"],
                "env": _environment(), "run_dir": str(folder.resolve()), "resumed": resume,
                "resumed_from_step": resumed_from, "cell_key": ua["cell_key"],
            }
            if not finite(value):
                known = ", ".join(sorted(summary["metrics"])[:12])
                raise UserError(f"objective '{spec.objective}' is {'missing' if value is None else value} "
                                f"in the final metrics ({known})")
        except KeyboardInterrupt:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the bookkeeping short
            fail_trial(study, trial, {"interrupted": True, "failure": "interrupted (Ctrl-C)",
                                      "wall_seconds": round(time.time() - t0, 2), **outcome})
            raise
        except Exception as e:
            if not isinstance(e, (UserError, TrialProcessError)):  # a failed job's own output is in the log already
                traceback.print_exc()
            fail_trial(study, trial, {"failure": f"{e.__class__.__name__}: {e}".splitlines()[0][:500],
                                      "retryable": not isinstance(e, UserError),
                                      "wall_seconds": round(time.time() - t0, 2), **outcome})
            return frozen_trial(study, trial)
        try:
            for key, val in outcome.items():
                trial.set_user_attr(key, val)
            study.tell(trial, value)
        except UpdateFinishedTrialError:
            print(f"sweep: trial {trial.number} ({run_key}) was reclaimed while it ran; its result stays in {folder}",
                  file=sys.stderr, flush=True)
    frozen = frozen_trial(study, trial)
    if frozen.state != TrialState.COMPLETE:
        print(f"sweep: trial {trial.number} ({run_key}) ended {frozen.state.name}", file=sys.stderr, flush=True)
    return frozen


__all__ = ["run_trial", "value_key", "checkpoint_step", "finite"]
