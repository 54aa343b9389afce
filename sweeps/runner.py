"""Run a sweep: queue the cells, run the workers (in this process or as worker processes), report progress.

:func:`run_sweep` is ``mtplab sweep run`` without its final table: it opens
the study (:mod:`sweeps.study`), queues every cell once, builds each
dataset once, and runs :func:`worker_loop` in this process or in ``--workers``
processes (``python -m sweeps.worker``), printing one line per finished
trial. Each worker claims cells and trains them by the exactly-once protocol
of :mod:`sweeps.protocol` (:mod:`sweeps.trial` trains one).

Example:
    >>> import tempfile, textwrap, os
    >>> os.environ.setdefault("MTPLAB_CACHE_DIR", tempfile.mkdtemp())  # doctest: +ELLIPSIS
    '...'
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "tiny.yaml").write_text(textwrap.dedent('''
    ...     task: {name: polyarith, train_examples: 300, test_per_op: 2}
    ...     grid: {n: [1, 2]}
    ...     fixed: {model.size: custom, model.d_model: 32, model.layers: 3, model.n_heads: 2}
    ...     budget: {steps: 2, batch_tokens: 256, context: 64}
    ... '''))
    >>> from sweeps.spec import load_spec
    >>> code = run_sweep(load_spec(root / "tiny.yaml"), runs_root=root / "runs", out=lambda *a: None, quiet=True)
    >>> code
    0
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweeps.multiproc import Plan, check_cells, plan_workers
from sweeps.protocol import HOST, Worker, claim, reclaim_stale, queue_cells
from sweeps.spec import Cell, SweepSpec, cells
from sweeps.status import cells_not_done
from sweeps.storage import redact, resolve_storage, sweep_lock
from sweeps.study import open_study
from sweeps.trial import finite, run_trial

def worker_loop(spec: SweepSpec, url: str, runs_root: Path, *, index: int = 0, quiet: bool = True,
                on_finish=None, log=None, plan: Plan | None = None) -> dict:
    """One worker: claim, train, tell, until every cell is done or out of retries.

    ``on_finish(study, frozen_trial)`` is called after each trial. Returns
    counts ``{"complete": ..., "failed": ...}`` of this worker's trials. A
    ``plan`` of several processes per trial trains each cell as a torchrun
    job (:mod:`sweeps.multiproc`).

    Example (``python -m sweeps.worker`` runs exactly this)::

        spec = load_spec("sweeps/quickstart.yaml")
        worker_loop(spec, "runs/quickstart/journal.log", Path("runs"), index=3)
        # -> {"complete": 2, "failed": 0}
    """
    from optuna.trial import TrialState

    log = log or (lambda msg: print(msg, flush=True))
    worker = Worker.here(index)
    study = open_study(spec, url, worker_index=index)
    all_cells = cells(spec)
    counts = {"complete": 0, "failed": 0}
    poll = max(0.5, min(5.0, spec.heartbeat_seconds / 2))
    idle_said = False
    while True:
        trial, others = claim(study, spec, url, all_cells, worker)
        if trial is None:
            if not others:
                return counts
            if not idle_said:
                log(f"{worker.label}: queue empty; waiting while other workers' trials run (a dead one is retried)")
                idle_said = True
            time.sleep(poll)
            continue
        idle_said = False
        log(f"{worker.label}: trial {trial.number} {trial.user_attrs['run_key']} "
            f"(attempt {trial.user_attrs.get('attempt', 1)})")
        frozen = run_trial(study, trial, spec, url, runs_root, worker, quiet=quiet, plan=plan)
        counts["complete" if frozen.state == TrialState.COMPLETE else "failed"] += 1
        if on_finish:
            on_finish(study, frozen)


def _spawn(spec: SweepSpec, url: str, runs_root: Path, index: int, plan: Plan, threads: int, logs: Path):
    cmd = [sys.executable, "-m", "sweeps.worker", str(Path(spec.path).resolve()), "--storage", url,
           "--study", spec.study, "--runs", str(Path(runs_root).resolve()), "--index", str(index),
           "--threads", str(threads)]
    if plan.procs > 1:
        cmd += ["--procs-per-trial", str(plan.procs), "--trial-threads", str(plan.threads)]
        cmd += ["--hide-gpus"] if plan.hide_gpus else []
    env = dict(os.environ)
    if plan.groups:
        env["CUDA_VISIBLE_DEVICES"] = plan.groups[index]
    logs.mkdir(parents=True, exist_ok=True)
    log_file = open(logs / f"{HOST}-w{index}.log", "a")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    proc.log_path = logs / f"{HOST}-w{index}.log"  # type: ignore[attr-defined]
    log_file.close()
    return proc


def _prepare_datasets(spec: SweepSpec, all_cells: list[Cell], quiet: bool = False) -> None:
    """Build each distinct dataset once, before the workers start (they would race to build it)."""
    from generators import registry
    from lab.config import build_run_config
    from lab.data import dataset_key, prepare

    seen = set()
    for cell in all_cells:
        probe = {p.name: (p.choices[0] if p.kind == "categorical" else p.low) for p in spec.search}
        cfg = build_run_config(registry.get(spec.task), {**cell.overrides(spec), **probe})
        key = dataset_key(cfg.task_name, cfg.task, cfg.train.data_seed)
        if key not in seen:
            seen.add(key)
            prepare(registry.get(cfg.task_name)(cfg.task), cfg.train.data_seed, quiet=quiet)


def progress_line(spec: SweepSpec, done: int, total: int, frozen) -> str:
    """``[3/9] n=2,size=1M,seed=0 done accuracy/in_domain=0.41 (62s)`` for a finished trial.

    ``done`` counts the cells done so far (this one included), ``total`` all cells.

    Example:
        >>> from optuna.trial import create_trial
        >>> from sweeps.spec import SweepSpec
        >>> s = SweepSpec("x", "x", "polyarith", {"model.n": [1, 2]}, {}, "acc", "maximize")
        >>> t = create_trial(value=0.5, user_attrs={"run_key": "n=1", "wall_seconds": 3.0})
        >>> progress_line(s, 1, 2, t)
        '[1/2] n=1 done acc=0.5 (3s)'
    """
    from optuna.trial import TrialState

    ua = frozen.user_attrs
    wall = f" ({ua['wall_seconds']:.0f}s)" if finite(ua.get("wall_seconds")) else ""
    where = f" on {ua['worker']}@{ua['host']}" if ua.get("worker") and ua.get("host") not in (None, HOST) else ""
    resumed = f", resumed from step {ua['resumed_from_step']}" if ua.get("resumed_from_step") else ""
    if frozen.state == TrialState.COMPLETE:
        return f"[{done}/{total}] {ua.get('run_key')} done {spec.objective}={frozen.value:.4g}{wall}{resumed}{where}"
    why = ua.get("failure", frozen.state.name.lower())
    return f"[{done}/{total}] {ua.get('run_key')} failed: {why}{wall}{where}"


class _Progress:
    """Counts cells done and prints one line per trial finished after it started."""

    def __init__(self, study, spec: SweepSpec, all_cells: list[Cell], out):
        from optuna.trial import TrialState

        self.spec, self.out, self.total = spec, out, len(all_cells)
        self.keys = {c.run_key for c in all_cells}
        trials = study.get_trials(deepcopy=False)
        self.seen = {t.number for t in trials if t.state.is_finished()}
        self.done = {t.user_attrs.get("run_key") for t in trials if t.state == TrialState.COMPLETE} & self.keys

    def __call__(self, study, frozen) -> None:
        from optuna.trial import TrialState

        if frozen.number in self.seen or not frozen.user_attrs.get("run_key"):
            return
        self.seen.add(frozen.number)
        if frozen.state == TrialState.COMPLETE and frozen.user_attrs["run_key"] in self.keys:
            self.done.add(frozen.user_attrs["run_key"])
        elif frozen.user_attrs.get("interrupted"):
            return
        self.out(progress_line(self.spec, len(self.done), self.total, frozen))

    def poll(self, study) -> None:
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished():
                self(study, t)


def run_sweep(spec: SweepSpec, *, storage: str | None = None, runs_root: str | Path = "runs", workers: int | None = 1,
              gpus: list[str] | None = None, gpus_per_trial: int | None = None, procs_per_trial: int | None = None,
              retry_failed: bool = False, out=print, quiet: bool = False) -> int:
    """``mtplab sweep run``: queue the cells, run the workers, print a line per finished trial.

    Returns 0 when every cell is done, 1 when some failed for good (the CLI
    then prints the results table, :func:`sweeps.cli.print_results`). ``storage``
    overrides the spec's; ``gpus`` pins worker i to ``gpus[i % len(gpus)]``, or with
    ``gpus_per_trial`` G to ``gpus[i*G:(i+1)*G]`` (each trial a torchrun job of G
    processes); ``procs_per_trial`` P makes each trial a job of P CPU processes
    (:func:`sweeps.multiproc.plan_workers` checks that they fit). ``quiet``
    silences the training output of the in-process worker (``out`` gets the progress lines).

    Example (the module docstring runs a tiny one)::

        run_sweep(load_spec("sweeps/quickstart.yaml"))                       # 1 worker, in this process
        run_sweep(spec, workers=4, gpus=["0", "1", "2", "3"], storage="postgresql://me@db/mtplab")
        run_sweep(spec, gpus=[str(i) for i in range(8)], gpus_per_trial=2)  # 4 workers, 2 GPUs each
    """
    runs_root = Path(runs_root)
    gpus = list(gpus or [])
    plan = plan_workers(workers, gpus, gpus_per_trial=gpus_per_trial, procs_per_trial=procs_per_trial)
    check_cells(spec, plan.procs)
    workers = plan.workers
    url = resolve_storage(storage, spec.storage, runs_root, spec.study)
    all_cells = cells(spec)
    study = open_study(spec, url, create=True)
    with sweep_lock(url, spec.study):
        reclaim_stale(study, spec, url)
        queue_cells(study, spec, all_cells, retry_failed=retry_failed)
    done = len(all_cells) - len(cells_not_done(study, all_cells))
    per_trial = "" if plan.procs == 1 else f" x {plan.procs} {'CPU ' if plan.hide_gpus else ''}processes per trial"
    gpus_said = f", GPUs {' | '.join(plan.groups) if plan.procs > 1 else ','.join(gpus or plan.groups)}" \
        if plan.groups else ""
    out(f"study '{spec.study}' in {redact(url)}: {len(all_cells)} cells, {done} done; "
        f"{workers} worker{'s' if workers != 1 else ''}{per_trial} on {HOST}{gpus_said}")
    if done < len(all_cells):
        _prepare_datasets(spec, all_cells, quiet)
    progress = _Progress(study, spec, all_cells, out)
    if workers == 1 and not plan.groups:
        worker_loop(spec, url, runs_root, index=0, quiet=quiet, on_finish=progress, log=lambda m: None, plan=plan)
    else:
        _run_processes(study, spec, url, runs_root, plan, progress, out)
    return 1 if cells_not_done(open_study(spec, url), all_cells) else 0


def _run_processes(study, spec, url, runs_root, plan: Plan, progress, out) -> None:
    """Spawn the worker processes and print a line per finished trial until they exit."""
    logs = Path(runs_root) / spec.study / "logs"
    # CPU workers share the cores this process may use (plan_workers: its affinity mask); a trial of several
    # processes sets each one's threads itself
    threads = plan.threads if plan.procs == 1 else 0
    procs = [_spawn(spec, url, runs_root, i, plan, threads, logs) for i in range(plan.workers)]
    out(f"worker logs: {logs}/")
    try:
        while [p.poll() for p in procs].count(None):  # poll every one: reaps a dead worker at once
            time.sleep(1.0)
            progress.poll(study)
    except KeyboardInterrupt:
        out("interrupted: stopping workers (their trials resume on the next sweep run)")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        deadline = time.time() + 5  # from a terminal they got the SIGINT too: let them mark their trials
        while time.time() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.1)
        for p in procs:  # the parent alone was interrupted (kill -INT): pass it on
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGINT)
                except OSError:
                    pass
        deadline = time.time() + 30
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    progress.poll(study)
    for i, p in enumerate(procs):
        if p.returncode not in (0, None):
            tail = "".join(Path(p.log_path).read_text(errors="replace").splitlines(True)[-5:])
            out(f"worker w{i} exited with status {p.returncode}; last lines of {p.log_path}:\n{tail.rstrip()}")


__all__ = ["run_sweep", "worker_loop", "progress_line"]
