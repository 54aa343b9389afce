"""Trials on several processes: which worker gets which GPUs or cores, and each trial as one torchrun job.

``mtplab sweep run SPEC --gpus-per-trial G`` gives worker i the GPUs
``gpus[i*G : (i+1)*G]`` (its ``CUDA_VISIBLE_DEVICES``); ``--procs-per-trial P``
gives it P CPU processes (gloo; the GPUs hidden from them). Either way the
worker claims cells as always (:mod:`sweeps.protocol`) and trains each one as

    python -m torch.distributed.run --standalone --nproc-per-node P -m sweeps.multiproc CONFIG RUN_DIR --summary S

(``torchrun``, with this interpreter): every rank trains its rows of each
global batch exactly as ``torchrun -m lab train`` does (:mod:`lab.distributed`),
rank 0 writes the run folder and, at the end, the run's summary (what
``lab.train.run`` returns in-process) to ``S``. The worker keeps the trial's
heartbeat, reports each eval of the run's ``eval.json`` to Optuna as it
appears, and tells the summary: the study sees the same trial as from an
in-process run. A failed job fails the trial with its last error line
(retried, and resumed from the checkpoint, as any failed trial); a rank whose
worker is gone stops, so a killed worker leaves no job behind.

Example:
    >>> plan_workers(None, ["0", "1", "2", "3", "4", "5", "6", "7"], gpus_per_trial=2, cores=16)
    Plan(workers=4, procs=2, groups=['0,1', '2,3', '4,5', '6,7'], threads=2, hide_gpus=False)
    >>> plan_workers(3, [], procs_per_trial=2, cores=4)
    Traceback (most recent call last):
    ...
    lab.errors.UserError: 3 workers x 2 processes per trial = 6 processes, but this host has 4 CPU cores; lower --workers or --procs-per-trial
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import UserError

# The line a failing rank prints last on stderr (the torchrun summary that follows it names no cause).
MARK = "mtplab-trial-error"
# The worker this job belongs to ("pid:start", sweeps.protocol.process_start): ranks stop when it is gone.
WORKER_ENV = "MTPLAB_SWEEP_WORKER"


def host_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPU ids a worker can be given: ``CUDA_VISIBLE_DEVICES`` when set, else 0..(device count - 1)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass(frozen=True)
class Plan:
    """How a sweep's workers run on this host: their number, processes per trial, and what each one gets.

    ``groups[i]`` is worker i's ``CUDA_VISIBLE_DEVICES`` (empty: no GPUs given);
    ``threads`` the CPU threads of each trial process (0: torch's default);
    ``hide_gpus`` hides the GPUs from CPU trial processes.
    """

    workers: int
    procs: int = 1
    groups: list[str] = field(default_factory=list)
    threads: int = 0
    hide_gpus: bool = False


def plan_workers(workers: int | None, gpus: list[str], *, gpus_per_trial: int | None = None,
                 procs_per_trial: int | None = None, cores: int | None = None) -> Plan:
    """Check that ``workers`` x processes per trial fit this host's GPUs or cores; a UserError (one line) if not.

    ``gpus`` is ``--gpus`` (empty: not given). Without either per-trial
    flag this is the one-process-per-trial plan of ``--workers``/``--gpus``
    (worker i on ``gpus[i % len(gpus)]``).

    Example:
        >>> plan_workers(None, ["3", "5"])
        Plan(workers=2, procs=1, groups=['3', '5'], threads=0, hide_gpus=False)
        >>> plan_workers(2, [], cores=2)  # CPU workers: one thread each on a 2-core host (or affinity mask)
        Plan(workers=2, procs=1, groups=[], threads=1, hide_gpus=False)
        >>> plan_workers(1, [], procs_per_trial=2, cores=2)
        Plan(workers=1, procs=2, groups=[], threads=1, hide_gpus=True)
        >>> plan_workers(None, ["0", "1", "2"], gpus_per_trial=2)
        Traceback (most recent call last):
        ...
        lab.errors.UserError: --gpus-per-trial 2 does not divide the 3 GPUs 0,1,2 into groups; give a multiple of 2 GPUs with --gpus
    """
    cores = cores or host_cores()
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if gpus_per_trial is not None and procs_per_trial is not None:
        raise UserError("--gpus-per-trial and --procs-per-trial exclude each other: the first for GPUs (one process "
                        "per GPU), the second for CPU processes")
    if procs_per_trial is not None:
        if procs_per_trial < 1:
            raise UserError(f"--procs-per-trial must be at least 1, got {procs_per_trial}")
        if gpus:
            raise UserError("--procs-per-trial runs CPU processes; for trials on several GPUs use --gpus-per-trial "
                            "with --gpus")
        workers = workers or 1
        if workers * procs_per_trial > cores:
            raise UserError(f"{workers} worker{'s' if workers != 1 else ''} x {procs_per_trial} processes per trial = "
                            f"{workers * procs_per_trial} processes, but this host has {cores} CPU cores; lower "
                            f"--workers or --procs-per-trial")
        return Plan(workers, procs_per_trial, [], max(1, cores // (workers * procs_per_trial)), True)
    if gpus_per_trial is None:
        workers = workers if workers is not None else (len(gpus) or 1)
        if gpus:
            return Plan(workers, 1, [gpus[i % len(gpus)] for i in range(workers)])
        return Plan(workers, 1, [], max(1, cores // workers))  # CPU workers share the cores this process may use
    if gpus_per_trial < 1:
        raise UserError(f"--gpus-per-trial must be at least 1, got {gpus_per_trial}")
    given = bool(gpus)
    gpus = gpus or visible_gpus()
    if not gpus:
        raise UserError(f"--gpus-per-trial {gpus_per_trial}: this host has no GPU (none visible); name them with "
                        f"--gpus, or run CPU processes with --procs-per-trial")
    where = f"the {len(gpus)} GPU{'s' if len(gpus) != 1 else ''} {','.join(gpus)}"
    if gpus_per_trial > len(gpus) or len(gpus) % gpus_per_trial:
        raise UserError(f"--gpus-per-trial {gpus_per_trial} does not divide {where} into groups; give a multiple of "
                        f"{gpus_per_trial} GPUs with --gpus" + ("" if given else " (default: every visible GPU)"))
    workers = workers if workers is not None else len(gpus) // gpus_per_trial
    if workers * gpus_per_trial > len(gpus):
        raise UserError(f"{workers} workers x {gpus_per_trial} GPUs per trial = {workers * gpus_per_trial} GPUs, but "
                        f"there are {where}; lower --workers (at most {len(gpus) // gpus_per_trial})")
    groups = [",".join(gpus[i * gpus_per_trial:(i + 1) * gpus_per_trial]) for i in range(workers)]
    return Plan(workers, gpus_per_trial, groups, max(1, cores // (workers * gpus_per_trial)), False)


def check_cells(spec, procs: int) -> None:
    """A UserError (one line) unless every cell's global batch splits across ``procs`` processes.

    Checked before anything runs, so a sweep is refused whole rather than
    failing cell by cell (the cells' configs as :mod:`sweeps.trial` builds them).
    """
    if procs <= 1:
        return
    from generators import registry
    from lab.config import build_run_config
    from lab.distributed import check_batch
    from sweeps.spec import cells

    for cell in cells(spec):
        probe = {p.name: (p.choices[0] if p.kind == "categorical" else p.low) for p in spec.search}
        config = build_run_config(registry.get(spec.task), {**spec.fixed, **cell.overrides(spec), **probe})
        try:
            check_batch(config.train, procs)
        except UserError as e:
            raise UserError(f"cell {cell.run_key}: {e}") from None


# ---------------- the worker's side: one trial as a torchrun job ----------------

class TrialProcessError(RuntimeError):
    """The torchrun job of a trial failed (retryable, as any crash)."""


def _error_line(lines) -> str | None:
    """The cause of a failed job among its last stderr lines: a rank's MARK line, else the last error-looking line.

    torchrun ends a failed job's stderr with its own summary (which names no
    cause), so the last line as such says little.

    Example:
        >>> _error_line(["Traceback (most recent call last):", "RuntimeError: out of memory",
        ...              "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ", "=" * 60,
        ...              "  traceback : Signal 9 (SIGKILL) received by PID 77", "=" * 60])
        'RuntimeError: out of memory'
        >>> _error_line([f"{MARK} (crash): RuntimeError: Connection reset by peer", "Root Cause (first observed failure):",
        ...              "[0]:", "  rank      : 1 (local_rank: 1)", "  exitcode  : -9 (pid: 77)  (SIGKILL)"])
        'rank 1 was killed (SIGKILL)'
    """
    root = lines[max((i for i, ln in enumerate(lines) if ln.startswith("Root Cause")), default=len(lines)):]
    rank = next((m.group(1) for m in map(re.compile(r"^\s*rank\s*: (\d+)").match, root) if m), None)
    killed = next((m.group(1) for m in map(re.compile(r"^\s*exitcode\s*: -\d+ .*\((SIG\w+)\)").match, root) if m), None)
    if rank is not None and killed:  # the first rank to go was killed (the others' errors follow from it)
        return f"rank {rank} was killed ({killed})"
    marked = [ln for ln in lines if ln.startswith(MARK)]
    if marked:
        return marked[0]
    for ln in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", ln) and "ChildFailedError" not in ln:
            return ln
    return next((ln.strip() for ln in reversed(lines) if ln.strip() and not set(ln.strip()) <= set("=-")), None)


def _report_evals(folder: Path, reported: set, report) -> None:
    """Report each eval in ``folder/eval.json`` not reported yet (the run's learning curve, as it grows)."""
    try:
        history = json.loads((folder / "eval.json").read_text()).get("history") or []
    except (OSError, ValueError):
        return  # not written yet (or being replaced: read again at the next poll)
    for entry in history:
        if entry.get("step") not in reported and isinstance(entry.get("metrics"), dict):
            reported.add(entry["step"])
            report(entry["step"], entry["metrics"])


def train_in_processes(config, folder: Path, *, procs: int, resume: bool, report, threads: int = 0,
                       hide_gpus: bool = False) -> dict:
    """Train (or resume) ``config`` in ``folder`` as a torchrun job of ``procs`` processes; return its summary.

    The summary is the dict ``lab.train.run`` returns in-process, written by
    rank 0. ``report(step, metrics)`` gets every eval of ``eval.json``. A
    failed job raises :class:`TrialProcessError` with its last error line (a
    UserError when the ranks refused the run, e.g. a diverged loss); Ctrl-C
    stops the job and re-raises.
    """
    from lab import checkpoint as ckpt
    from lab.distributed import check_batch
    from sweeps.protocol import process_start

    check_batch(config.train, procs)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
               **{WORKER_ENV: f"{os.getpid()}:{process_start(os.getpid())}"})
    env["OMP_NUM_THREADS"] = str(threads or env.get("OMP_NUM_THREADS") or 1)  # also silences torchrun's banner
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory(prefix="mtplab-trial-") as tmp:
        config_file, summary_file = Path(tmp) / "config.json", Path(tmp) / "summary.json"
        ckpt.write_json(config_file, config.to_dict())
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
               "-m", "sweeps.multiproc", str(config_file), str(folder), "--summary", str(summary_file)]
        if resume:
            cmd.append("--resume")
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
        tail: collections.deque = collections.deque(maxlen=200)

        def pump():  # the job's stderr goes on to ours (the worker's log), and its last lines are kept
            for line in proc.stderr:
                tail.append(line.rstrip("\n"))
                sys.stderr.write(line)
            sys.stderr.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        reported: set = set()
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                _report_evals(folder, reported, report)
        except KeyboardInterrupt:  # from a terminal torchrun got it too; from `sweep run`'s parent, pass it on
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        finally:
            reader.join(timeout=10)
        _report_evals(folder, reported, report)
        if proc.returncode == 0 and summary_file.is_file():
            return json.loads(summary_file.read_text())
    line = _error_line(list(tail)) or f"exit status {proc.returncode}, no output"
    if proc.returncode < 0:  # torchrun itself was killed (a failed rank makes it exit 1); its ranks then stop
        line = f"torchrun was killed ({signal.Signals(-proc.returncode).name})"
    if line.startswith(f"{MARK} (user): "):
        raise UserError(line.split(": ", 1)[1])
    if line.startswith(MARK):
        line = line.split(": ", 1)[1]
    raise TrialProcessError(f"torchrun job of {procs} processes failed: {line}")


# ---------------- each rank's side: python -m sweeps.multiproc (under torchrun) ----------------

def _watch_worker(spec: str | None) -> None:
    """Stop this rank when the sweep worker that launched its job, or torchrun, is gone (killed): no orphaned ranks.

    Otherwise a rank of a killed job could go on writing the run folder while
    the retried trial resumes it.
    """
    if not spec:
        return
    from sweeps.protocol import process_start

    pid, _, start = spec.partition(":")
    agent = os.getppid()  # torchrun's agent; a rank whose agent dies is handed to init (or a subreaper)

    def watch():
        while True:
            time.sleep(1.0)
            gone = "sweep worker" if process_start(int(pid)) != start else "torchrun" if os.getppid() != agent else None
            if gone:
                try:  # stderr may be a pipe to the dead worker
                    print(f"{MARK} (crash): the {gone} of this job is gone; stopping", file=sys.stderr, flush=True)
                finally:
                    os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """One rank of a trial's job: train (or resume) the run, rank 0 writes the summary; 0, 1 or 2 (bad input).

    Example:
        >>> main(["/nonexistent/config.json", "/nonexistent/run", "--summary", "/nonexistent/s.json"])
        2
    """
    p = argparse.ArgumentParser(prog="python -m sweeps.multiproc", description="one rank of a sweep trial (torchrun)")
    p.add_argument("config", help="the run's config (RunConfig.to_dict() as JSON)")
    p.add_argument("run_dir")
    p.add_argument("--summary", required=True, help="rank 0 writes the run's summary (JSON) here")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    args = p.parse_args(argv)
    try:
        from generators import registry
        from lab import checkpoint as ckpt
        from lab import train
        from lab.config import RunConfig

        _watch_worker(os.environ.get(WORKER_ENV))
        if args.resume:
            summary = train.resume(Path(args.run_dir), quiet=True)
        else:
            try:
                data = json.loads(Path(args.config).read_text())
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read the trial's config {args.config}: {e}") from None
            summary = train.run(RunConfig.from_dict(data, registry.get), Path(args.run_dir), quiet=True)
        if summary.get("rank", 0) == 0:
            ckpt.write_json(Path(args.summary), summary)
        return 0
    except UserError as e:
        kind = "" if type(e) is UserError else f"{e.__class__.__name__}: "  # e.g. TrainingDiverged
        print(f"{MARK} (user): {kind}{e}".splitlines()[0], file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        traceback.print_exc()
        print(f"{MARK} (crash): {e.__class__.__name__}: {e}".splitlines()[0], file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Plan", "plan_workers", "check_cells", "train_in_processes", "TrialProcessError", "host_cores"]
