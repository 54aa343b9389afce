"""Run a sweep: queue every cell once, let workers take them, survive crashes.

The protocol, per study (all of it in standard Optuna storage):

1. **Queue.** ``sweep run`` validates the spec, creates the study (or loads
   it, refusing one started from a different spec) and, inside the sweep lock
   (:func:`sweeps.storage.sweep_lock`), enqueues one WAITING trial for every
   cell that has no WAITING, RUNNING or COMPLETE trial yet. The trial carries
   the cell in its user attributes (``cell``, ``cell_key``, ``run_key``) and
   the grid values as fixed params. No GridSampler: it repeats cells under
   concurrency; a queue filled under a lock cannot.
2. **Claim.** A worker takes the lock, reclaims stale trials, re-queues what
   needs it, pops one WAITING trial with ``study.ask()`` and stamps it with
   ``worker``, ``host``, ``pid`` and a lease, then releases the lock.
3. **Train.** The cell's run folder is ``<runs>/<study>/<run_key>/``, keyed
   by the cell, not the trial number: a folder with a ``config.json`` is
   resumed (``lab.train.resume(folder)``) from its last
   checkpoint; otherwise a fresh run starts there. A heartbeat thread keeps
   the claim alive: the ``lease_until`` user attribute for journal files,
   Optuna's ``record_heartbeat`` for PostgreSQL/SQLite.
4. **Tell.** The objective (from the final metrics) becomes the trial value;
   the metrics, parameter counts, tokens, wall time, device, versions and git
   commit become user attributes.
5. **Stale trials.** A RUNNING trial is stale when its worker ran on this
   host and its process is gone (pid checked together with its start time,
   so a recycled pid does not fool us), or when its lease expired (journal;
   PostgreSQL uses Optuna's heartbeat + ``grace_period``, and the retry
   callback re-queues the trial). A stale trial is marked FAIL and its cell
   re-queued with the same params; the next claim resumes its folder. A cell
   with a COMPLETE trial is never queued again. A cell that keeps failing is
   tried at most ``1 + max_retries`` times (Ctrl-C does not count); a
   UserError (bad config, missing objective) is not retried unless
   ``--retry-failed``.

Workers keep polling while other workers' trials are RUNNING, so a trial
whose worker dies is picked up by a surviving worker; they exit when every
cell is done or out of retries.

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

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

from lab.errors import UserError
from sweeps.spec import Cell, SweepSpec, cells, identity_diff, identity_hash
from sweeps.storage import kind_of, open_storage, redact, resolve_storage, sweep_lock

HOST = socket.gethostname()


# ---------------- processes ----------------

def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), or None if it is gone.

    Together with the pid it names one process: a pid recycled by a new
    process gets a different start time.

    Example:
        >>> process_start(os.getpid()) is not None, process_start(2**22 + 1)
        (True, None)
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):  # a zombie (killed, not yet reaped by its parent) is gone too
            return None
        return fields[19]
    except (OSError, IndexError):
        if not Path("/proc/self/stat").exists():  # no procfs (macOS): fall back to kill(pid, 0)
            try:
                os.kill(pid, 0)
                return "?"
            except ProcessLookupError:
                return None
            except PermissionError:
                return "?"
        return None


def process_alive(pid: int, start: str | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs (on this host).

    Example:
        >>> process_alive(os.getpid(), process_start(os.getpid())), process_alive(os.getpid(), "0")
        (True, False)
    """
    now = process_start(pid)
    if now is None:
        return False
    return start in (None, "?") or now in ("?", start)


@dataclass(frozen=True)
class Worker:
    """Who runs a trial: a label (``w0``), the host, the pid and the pid's start time."""

    name: str
    host: str = HOST
    pid: int = 0
    pid_start: str | None = None

    @classmethod
    def here(cls, index: int) -> "Worker":
        """This process as worker number ``index``.

        Example:
            >>> Worker.here(2).name, Worker.here(2).pid == os.getpid()
            ('w2', True)
        """
        return cls(f"w{index}", HOST, os.getpid(), process_start(os.getpid()))

    @property
    def label(self) -> str:
        return f"{self.name}@{self.host}:{self.pid}"


# ---------------- the study ----------------

def make_sampler(spec: SweepSpec, worker_index: int = 0):
    """The sampler for search params (grid params always come from the queue).

    Example:
        >>> from sweeps.spec import SweepSpec
        >>> type(make_sampler(SweepSpec("x", "x", "polyarith", {}, {}, "o", "maximize"))).__name__
        'TPESampler'
    """
    import optuna

    seed = spec.sampler_seed * 1000 + worker_index
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=seed)


def grid_distributions(spec: SweepSpec) -> dict:
    """Dotted key -> the Optuna distribution under which a grid value is recorded as a trial param.

    Numbers become Int/Float distributions over the axis' range (compatible
    when the grid grows), sizes and head kinds categorical over all their
    legal values, booleans over (False, True). Other strings and lists stay
    in the ``cell`` user attribute only (a categorical over them would break
    when the grid grows).

    Example:
        >>> from sweeps.spec import SweepSpec
        >>> s = SweepSpec("x", "x", "polyarith", {"model.n": [1, 4], "model.size": ["1M"]}, {}, "o", "maximize")
        >>> sorted(grid_distributions(s))
        ['model.n', 'model.size']
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from lab.config import HEAD_KINDS, SIZES

    out = {}
    for key, values in spec.grid.items():
        if key == "model.size":
            out[key] = CategoricalDistribution(tuple(SIZES) + ("custom",))
        elif key == "model.head_kind":
            out[key] = CategoricalDistribution(HEAD_KINDS)
        elif all(isinstance(v, bool) for v in values):
            out[key] = CategoricalDistribution((False, True))
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[key] = IntDistribution(min(values), max(values))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = FloatDistribution(float(min(values)), float(max(values)))
    return out


def _suggest(trial, name: str, dist):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_int(name, dist.low, dist.high, log=dist.log)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used.*")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_study(spec: SweepSpec, url: str, *, worker_index: int = 0, create: bool = False):
    """The study of ``spec`` in ``url`` (created with its attributes if ``create``).

    An existing study started from a different spec (budget, fixed fields,
    objective, search space) is refused with a UserError listing the changes,
    before anything is written to the storage; a grown grid is fine (new
    cells are queued). A damaged journal file is refused first
    (:func:`sweeps.storage.check_journal`).

    Example:
        >>> open_study(SweepSpec("x", "nosuch", "polyarith", {}, {}, "o", "maximize"),
        ...            "/nonexistent/journal.log")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: no study 'nosuch' in /nonexistent/journal.log; start it with: mtplab sweep run x
    """
    import optuna

    from sweeps.storage import storage_exists

    _quiet_optuna()
    if not create and not storage_exists(url):
        raise UserError(f"no study '{spec.study}' in {redact(url)}; start it with: mtplab sweep run {spec.path}")
    if kind_of(url) == "postgresql":
        with sweep_lock(url, "mtplab-schema"):  # concurrent first connections race to create the tables
            storage = open_storage(url, spec)
    else:
        storage = open_storage(url, spec)
    sampler = make_sampler(spec, worker_index)
    if not create:
        try:
            return optuna.load_study(study_name=spec.study, storage=storage, sampler=sampler)
        except KeyError:
            raise UserError(f"no study '{spec.study}' in {redact(url)}; start it with: mtplab sweep run {spec.path}") from None
    with sweep_lock(url, spec.study):
        try:  # an existing study is loaded, not "created" again: create_study appends a record even then
            study = optuna.load_study(study_name=spec.study, storage=storage, sampler=sampler)
        except KeyError:
            study = optuna.create_study(study_name=spec.study, storage=storage, sampler=sampler,
                                        direction=spec.direction, load_if_exists=True)
        _check_and_store_spec(study, spec, url)
    return study


def _check_and_store_spec(study, spec: SweepSpec, url: str) -> None:
    """Refuse a study started from a different spec; store the spec attributes (grid as the union)."""
    if study.direction.name.lower() != spec.direction:
        raise UserError(f"study '{spec.study}' in {redact(url)} {study.direction.name.lower()}s; the spec says "
                        f"{spec.direction}. Use another study name (--study)")
    attrs = study.user_attrs
    mine = identity_hash(spec)
    if attrs.get("spec_hash") not in (None, mine):
        old = (attrs.get("spec") or {})
        old_identity = {"task": old.get("task"), "fixed": old.get("fixed"), "objective": old.get("objective"),
                        "direction": old.get("direction"), "search_space": (old.get("search") or {}).get("space"),
                        "grid_keys": list(old.get("grid") or {})}
        changes = "; ".join(identity_diff(old_identity, spec.identity())[:4]) or "spec changed"
        raise UserError(f"study '{spec.study}' in {redact(url)} was started from a different spec ({changes}); "
                        f"restore the spec or start a new study with --study NAME")
    # The grid may have grown: keep the stored grid as the union, in order.
    spec_dict = spec.to_dict()
    if isinstance(attrs.get("spec"), dict):
        old_grid = attrs["spec"].get("grid") or {}
        for key, values in old_grid.items():
            merged = list(values) + [v for v in spec_dict["grid"].get(key, []) if v not in values]
            spec_dict["grid"][key] = merged
    new_attrs = {"spec": spec_dict, "task": spec.task, "objective": spec.objective, "direction": spec.direction,
                 "spec_path": str(spec.path), "spec_hash": mine}
    for key, value in new_attrs.items():
        if attrs.get(key) != value:
            study.set_user_attr(key, value)


# ---------------- queue, stale trials, claims ----------------

def trials_by_run_key(study) -> dict[str, list]:
    """The study's trials grouped by their ``run_key`` user attribute, oldest first.

    Example:
        >>> import optuna
        >>> s = optuna.create_study()
        >>> s.enqueue_trial({}, user_attrs={"run_key": "n=1"})
        >>> list(trials_by_run_key(s))
        ['n=1']
    """
    out: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.user_attrs.get("run_key")
        if key is not None:
            out.setdefault(key, []).append(t)
    return out


def stale_reason(trial, spec: SweepSpec, *, journal: bool, now: float | None = None) -> str | None:
    """Why a RUNNING trial is stale, or None if its worker may still be alive.

    A worker on this host is judged by its process (pid + start time); a
    worker elsewhere by its lease (journal) or Optuna's heartbeat (RDB, see
    :func:`reclaim_stale`).

    Example:
        >>> from optuna.trial import create_trial, TrialState
        >>> from sweeps.spec import SweepSpec
        >>> s = SweepSpec("x", "x", "polyarith", {}, {}, "o", "maximize")
        >>> t = create_trial(state=TrialState.RUNNING, user_attrs={"host": HOST, "pid": 2**22 + 1, "lease_until": 0})
        >>> stale_reason(t, s, journal=True)
        'worker pid 4194305 on this host is gone'
    """
    ua = trial.user_attrs
    now = time.time() if now is None else now
    if ua.get("host") == HOST and isinstance(ua.get("pid"), int):
        # On this host the process table is the truth: a live worker is never reclaimed (two
        # processes must not train one run folder), however late its lease.
        if not process_alive(ua["pid"], ua.get("pid_start")):
            return f"worker pid {ua['pid']} on this host is gone"
        return None
    if journal:
        lease = ua.get("lease_until")
        if isinstance(lease, (int, float)):
            if now > lease:
                return f"lease expired {now - lease:.0f}s ago (worker {ua.get('worker')}@{ua.get('host')})"
        elif trial.datetime_start is not None and now - trial.datetime_start.timestamp() > spec.grace_seconds:
            return "running without a lease"
    return None


def _fail(study, trial_id: int, attrs: dict) -> bool:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def reclaim_stale(study, spec: SweepSpec, url: str) -> list[str]:
    """Mark stale RUNNING trials FAIL (call inside the sweep lock); returns their run keys.

    PostgreSQL/SQLite: Optuna's heartbeat (``fail_stale_trials``), whose
    retry callback re-queues each one; plus the same-host dead-pid check.
    Journal: the dead-pid check and the lease.

    Example:
        >>> import optuna
        >>> from sweeps.spec import SweepSpec
        >>> reclaim_stale(optuna.create_study(), SweepSpec("x", "x", "polyarith", {}, {}, "o", "maximize"), "j.log")
        []
    """
    from optuna.trial import TrialState

    journal = kind_of(url) == "journal"
    out = []
    if not journal:
        from optuna.storages import fail_stale_trials

        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fail_stale_trials(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if t.number in before:
                out.append(t.user_attrs.get("run_key", f"#{t.number}"))
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(t, spec, journal=journal)
        if reason and _fail(study, t._trial_id, {"failure": f"stale: {reason}", "stale": True}):
            out.append(t.user_attrs.get("run_key", f"#{t.number}"))
    return out


def _cell_attrs(spec: SweepSpec, cell: Cell) -> dict:
    return {"cell": cell.values, "cell_key": cell.key, "run_key": cell.run_key, "cell_trial": cell.index,
            "task": spec.task}


def queue_cells(study, spec: SweepSpec, all_cells: list[Cell], *, retry_failed: bool = False) -> list[str]:
    """Enqueue every cell without a WAITING, RUNNING or COMPLETE trial (call inside the sweep lock).

    A failed cell is re-queued with the params of its last attempt (so a
    retried search trial keeps its learning rate and its run folder) while
    it has retries left; ``retry_failed`` ignores that limit once.

    Example:
        >>> import optuna
        >>> from sweeps.spec import SweepSpec
        >>> s = SweepSpec("x", "x", "polyarith", {"model.n": [1, 2]}, {}, "o", "maximize")
        >>> study = optuna.create_study()
        >>> queue_cells(study, s, cells(s)), queue_cells(study, s, cells(s))
        (['n=1', 'n=2'], [])
    """
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    groups = trials_by_run_key(study)
    dists = grid_distributions(spec)
    queued = []
    for cell in all_cells:
        trials = groups.get(cell.run_key, [])
        if any(t.state in live for t in trials):
            continue
        failed = [t for t in trials if t.state == TrialState.FAIL]
        counted = [t for t in failed if not t.user_attrs.get("interrupted")]
        if not retry_failed and (len(counted) > spec.max_retries
                                 or any(t.user_attrs.get("retryable") is False for t in counted)):
            continue
        params = {k: v for k, v in cell.values.items() if k in dists}
        attrs = _cell_attrs(spec, cell)
        if failed:
            last = failed[-1]
            params.update(last.system_attrs.get("fixed_params") or {})
            params.update(last.params)
            attrs["retry_of"] = last.number
        study.enqueue_trial(params, user_attrs=attrs)
        queued.append(cell.run_key)
    return queued


def claim(study, spec: SweepSpec, url: str, all_cells: list[Cell], worker: Worker):
    """Take the next cell: ``(trial, others_running)``; ``trial`` is None when the queue is empty.

    Inside the sweep lock: reclaim stale trials, re-queue cells that need it,
    pop a WAITING trial (``study.ask()``) and stamp it with the worker and a
    lease. ``others_running`` tells an idle worker to keep polling (a running
    trial may still die and need a retry).

    Example:
        >>> import tempfile
        >>> from sweeps.spec import SweepSpec
        >>> url = str(Path(tempfile.mkdtemp()) / "journal.log")
        >>> s = SweepSpec("x.yaml", "demo", "polyarith", {"model.n": [1]}, {}, "o", "maximize")
        >>> study = open_study(s, url, create=True)
        >>> trial, _ = claim(study, s, url, cells(s), Worker.here(0))
        >>> trial.user_attrs["run_key"], trial.user_attrs["worker"], trial.user_attrs["pid"] == os.getpid()
        ('n=1', 'w0', True)
        >>> claim(study, s, url, cells(s), Worker.here(1))  # queue empty; w0's trial still runs
        (None, True)
    """
    from optuna.trial import TrialState

    with sweep_lock(url, spec.study):
        reclaim_stale(study, spec, url)
        queue_cells(study, spec, all_cells)
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        waiting = [t for t in waiting if t.user_attrs.get("run_key")]
        if not waiting:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            return None, bool(running)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask()
        if not trial.user_attrs.get("run_key"):  # cannot happen while every claimer holds the lock
            study.tell(trial, state=TrialState.FAIL)
            return None, True
        if kind_of(url) != "journal":
            study._storage.record_heartbeat(trial._trial_id)
        attempt = len(trials_by_run_key(study).get(trial.user_attrs["run_key"], []))
        for key, value in {"worker": worker.name, "host": worker.host, "pid": worker.pid,
                           "pid_start": worker.pid_start, "lease_until": time.time() + spec.grace_seconds,
                           "attempt": attempt, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}.items():
            trial.set_user_attr(key, value)
        return trial, True


class Heartbeat:
    """Keeps a claimed trial alive while it trains (a daemon thread).

    Journal: refreshes ``lease_until``; RDB: ``storage.record_heartbeat``.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> trial = study.ask()
        >>> with Heartbeat(study, trial._trial_id, journal=True, interval=1, grace=5):
        ...     pass
    """

    def __init__(self, study, trial_id: int, *, journal: bool, interval: float, grace: float):
        self.storage, self.trial_id, self.journal = study._storage, trial_id, journal
        self.interval, self.grace = interval, grace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sweep-heartbeat")

    def _beat(self) -> None:
        if self.journal:
            self.storage.set_trial_user_attr(self.trial_id, "lease_until", time.time() + self.grace)
        else:
            self.storage.record_heartbeat(self.trial_id)

    def _run(self) -> None:
        warned = False
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception as e:  # storage hiccup: keep training, try again next beat
                if not warned:
                    print(f"sweep: heartbeat failed ({e.__class__.__name__}: {e}); retrying", file=sys.stderr, flush=True)
                    warned = True

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


# ---------------- one trial ----------------

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


def _finite(x) -> bool:
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


def run_trial(study, trial, spec: SweepSpec, url: str, runs_root: Path, worker: Worker, *, quiet: bool = True):
    """Train the cell of a claimed trial in its run folder (resuming it if it has one) and tell the result.

    Returns the finished trial (a FrozenTrial). Ctrl-C marks the trial FAIL
    with ``interrupted`` (not counted as a failure; the next run resumes it)
    and re-raises.

    Example (what :func:`worker_loop` does with each claim)::

        trial, _ = claim(study, spec, url, cells(spec), Worker.here(0))
        frozen = run_trial(study, trial, spec, url, Path("runs"), Worker.here(0))
        frozen.state, frozen.value, frozen.user_attrs["run_dir"]
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from lab import checkpoint as ckpt
    from lab import train
    from lab.config import build_run_config

    ua = trial.user_attrs
    run_key = ua["run_key"]
    folder = Path(runs_root) / spec.study / run_key
    t0 = time.time()
    outcome: dict = {}
    with Heartbeat(study, trial._trial_id, journal=kind_of(url) == "journal",
                   interval=spec.heartbeat_seconds, grace=spec.grace_seconds):
        try:
            for key, dist in grid_distributions(spec).items():
                if key in ua["cell"]:
                    _suggest(trial, key, dist)
            searched = {p.name: _suggest(trial, p.name, p.distribution()) for p in spec.search}
            config = build_run_config(spec.task, {**spec.fixed, **ua["cell"], **searched})
            resume = (folder / "config.json").exists()
            resumed_from = None

            def report(step: int, metrics: dict) -> None:  # learning curves for optuna-dashboard
                value = metrics.get(value_key(spec.objective, metrics))
                if _finite(value):
                    with contextlib.suppress(Exception):  # a reclaimed or finished trial: the run goes on
                        trial.report(float(value), step)

            if resume:
                stored = ckpt.read_config(folder)
                if stored.to_dict() != config.to_dict():
                    raise UserError(f"run folder {folder} holds a different config than cell {run_key}; "
                                    f"move it away to retrain the cell")
                resumed_from = checkpoint_step(folder)
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
            if not _finite(value):
                known = ", ".join(sorted(summary["metrics"])[:12])
                raise UserError(f"objective '{spec.objective}' is {'missing' if value is None else value} "
                                f"in the final metrics ({known})")
        except KeyboardInterrupt:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the bookkeeping short
            _fail(study, trial._trial_id, {"interrupted": True, "failure": "interrupted (Ctrl-C)",
                                           "wall_seconds": round(time.time() - t0, 2), **outcome})
            raise
        except Exception as e:
            if not isinstance(e, UserError):
                traceback.print_exc()
            _fail(study, trial._trial_id, {"failure": f"{e.__class__.__name__}: {e}".splitlines()[0][:500],
                                           "retryable": not isinstance(e, UserError),
                                           "wall_seconds": round(time.time() - t0, 2), **outcome})
            return study._storage.get_trial(trial._trial_id)
        try:
            for key, val in outcome.items():
                trial.set_user_attr(key, val)
            study.tell(trial, value)
        except UpdateFinishedTrialError:
            print(f"sweep: trial {trial.number} ({run_key}) was reclaimed while it ran; its result stays in {folder}",
                  file=sys.stderr, flush=True)
    frozen = study._storage.get_trial(trial._trial_id)
    if frozen.state != TrialState.COMPLETE:
        print(f"sweep: trial {trial.number} ({run_key}) ended {frozen.state.name}", file=sys.stderr, flush=True)
    return frozen


# ---------------- workers ----------------

def worker_loop(spec: SweepSpec, url: str, runs_root: Path, *, index: int = 0, quiet: bool = True,
                on_finish=None, log=None) -> dict:
    """One worker: claim, train, tell, until every cell is done or out of retries.

    ``on_finish(study, frozen_trial)`` is called after each trial. Returns
    counts ``{"complete": ..., "failed": ...}`` of this worker's trials.

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
        frozen = run_trial(study, trial, spec, url, runs_root, worker, quiet=quiet)
        counts["complete" if frozen.state == TrialState.COMPLETE else "failed"] += 1
        if on_finish:
            on_finish(study, frozen)


def _spawn(spec: SweepSpec, url: str, runs_root: Path, index: int, gpus: list[str], threads: int, logs: Path):
    cmd = [sys.executable, "-m", "sweeps.worker", str(Path(spec.path).resolve()), "--storage", url,
           "--study", spec.study, "--runs", str(Path(runs_root).resolve()), "--index", str(index),
           "--threads", str(threads)]
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
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
        cfg = build_run_config(spec.task, {**cell.overrides(spec), **probe})
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
    wall = f" ({ua['wall_seconds']:.0f}s)" if _finite(ua.get("wall_seconds")) else ""
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


def run_sweep(spec: SweepSpec, *, storage: str | None = None, runs_root: str | Path = "runs", workers: int = 1,
              gpus: list[str] | None = None, retry_failed: bool = False, out=print, quiet: bool = False) -> int:
    """``mtplab sweep run``: queue the cells, run the workers, print progress and the results table.

    Returns 0 when every cell is done, 1 when some failed for good. ``storage``
    overrides the spec's; ``gpus`` pins worker i to ``gpus[i % len(gpus)]``; ``quiet``
    silences the training output of the in-process worker (``out`` gets the progress lines).

    Example (the module docstring runs a tiny one)::

        run_sweep(load_spec("sweeps/quickstart.yaml"))                       # 1 worker, in this process
        run_sweep(spec, workers=4, gpus=["0", "1", "2", "3"], storage="postgresql://me@db/mtplab")
    """
    from optuna.trial import TrialState

    from sweeps.status import results_table

    runs_root = Path(runs_root)
    url = resolve_storage(storage, spec.storage, runs_root, spec.study)
    gpus = list(gpus or [])
    all_cells = cells(spec)
    study = open_study(spec, url, create=True)
    with sweep_lock(url, spec.study):
        reclaim_stale(study, spec, url)
        queue_cells(study, spec, all_cells, retry_failed=retry_failed)
    groups = trials_by_run_key(study)
    done = sum(1 for c in all_cells if any(t.state == TrialState.COMPLETE for t in groups.get(c.run_key, [])))
    out(f"study '{spec.study}' in {redact(url)}: {len(all_cells)} cells, {done} done; "
        f"{workers} worker{'s' if workers != 1 else ''} on {HOST}" + (f", GPUs {','.join(gpus)}" if gpus else ""))
    if done < len(all_cells):
        _prepare_datasets(spec, all_cells, quiet)
    progress = _Progress(study, spec, all_cells, out)
    if workers == 1 and not gpus:
        worker_loop(spec, url, runs_root, index=0, quiet=quiet, on_finish=progress, log=lambda m: None)
    else:
        _run_processes(study, spec, url, runs_root, workers, gpus, progress, out)
    study = open_study(spec, url)
    out("")
    out(results_table(study, spec, all_cells))
    groups = trials_by_run_key(study)
    missing = [c.run_key for c in all_cells if not any(t.state == TrialState.COMPLETE for t in groups.get(c.run_key, []))]
    if missing:
        out(f"{len(missing)} of {len(all_cells)} cells not done ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); see: mtplab sweep status {spec.path}")
        return 1
    return 0


def _run_processes(study, spec, url, runs_root, workers, gpus, progress, out) -> None:
    """Spawn the worker processes and print a line per finished trial until they exit."""
    logs = Path(runs_root) / spec.study / "logs"
    threads = max(1, (os.cpu_count() or 1) // workers) if not gpus else 0
    procs = [_spawn(spec, url, runs_root, i, gpus, threads, logs) for i in range(workers)]
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


__all__ = ["run_sweep", "worker_loop", "claim", "queue_cells", "reclaim_stale", "run_trial", "open_study",
           "stale_reason", "process_alive", "process_start", "grid_distributions", "trials_by_run_key",
           "progress_line", "Worker", "Heartbeat", "HOST"]
