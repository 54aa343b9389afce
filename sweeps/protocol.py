"""The exactly-once protocol of a sweep: queue every cell once, claim it, keep the claim alive, reclaim the dead.

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
   resumed from its last checkpoint, else a fresh run starts there
   (:mod:`sweeps.trial`). A heartbeat thread (:class:`Heartbeat`) keeps the
   claim alive: the ``lease_until`` user attribute for journal files,
   Optuna's ``record_heartbeat`` for PostgreSQL/SQLite.
4. **Tell.** The objective (from the final metrics) becomes the trial value;
   metrics, parameter counts, wall time, device and versions become user attributes.
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
cell is done or out of retries (:func:`sweeps.runner.worker_loop`). This
module is the one place that touches Optuna's private attributes
(``study._storage``, ``trial._trial_id``).

Example:
    >>> Worker.here(0).label == f"w0@{HOST}:{os.getpid()}"
    True
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from sweeps.spec import Cell, SweepSpec
from sweeps.storage import kind_of, sweep_lock
from sweeps.study import grid_distributions

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


# ---------------- queue, stale trials, claims, heartbeats ----------------

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


def fail_trial(study, trial, attrs: dict) -> bool:
    """Set ``attrs`` on a RUNNING trial of any process and mark it FAIL; False if it had finished already.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> trial = study.ask()
        >>> fail_trial(study, trial, {"failure": "demo"}), fail_trial(study, trial, {})
        (True, False)
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
        return storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def frozen_trial(study, trial):
    """The trial as the storage has it now (a FrozenTrial), e.g. ``frozen_trial(study, trial).state``."""
    return study._storage.get_trial(trial._trial_id)


def is_journal(study) -> bool:
    """Whether ``study`` lives in a journal file (leases) rather than a database (heartbeats): see :func:`stale_reason`."""
    from optuna.storages import JournalStorage

    return isinstance(study._storage, JournalStorage)


def reclaim_stale(study, spec: SweepSpec, url: str) -> list[str]:
    """Mark stale RUNNING trials FAIL (call inside the sweep lock); returns their run keys.

    PostgreSQL/SQLite: Optuna's heartbeat (``fail_stale_trials``), whose
    retry callback re-queues each one; plus the same-host dead-pid check.
    Journal: the dead-pid check and the lease.

    Example:
        >>> import optuna
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
        if reason and fail_trial(study, t, {"failure": f"stale: {reason}", "stale": True}):
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
        >>> from sweeps.spec import cells
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
        >>> from sweeps.spec import cells
        >>> from sweeps.study import open_study
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
        >>> with Heartbeat(study, trial, journal=True, interval=1, grace=5):
        ...     pass
    """

    def __init__(self, study, trial, *, journal: bool, interval: float, grace: float):
        self.storage, self.trial_id, self.journal = study._storage, trial._trial_id, journal
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


__all__ = ["HOST", "Worker", "process_start", "process_alive", "trials_by_run_key", "stale_reason",
           "reclaim_stale", "queue_cells", "claim", "Heartbeat", "fail_trial", "frozen_trial", "is_journal"]
