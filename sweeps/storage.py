"""Where a study lives, and the one lock that makes queueing exactly-once.

Three kinds of storage, all standard Optuna, so ``optuna-dashboard`` opens them:

* **a journal file** (the default: ``runs/<study>/journal.log``, no server):
  Optuna's ``JournalStorage`` over ``JournalFileBackend``, with a lock that
  dies with its process and a check for damaged files (:mod:`sweeps.journal`).
  Append-only, safe for many processes on one machine (or on a shared
  filesystem with working ``flock``).
* **PostgreSQL** (``postgresql://user:pass@host/db``): Optuna's ``RDBStorage``
  with heartbeats (``heartbeat_interval``/``grace_period``) and a retry
  callback, for many hosts.
* **SQLite** (``sqlite:///path.db``) works too, through ``RDBStorage``; the
  journal file is the tested embedded default (SQLite can raise "database is
  locked" under concurrent writers).

**The sweep lock.** Queueing cells, reclaiming stale trials and popping a
waiting trial happen inside :func:`sweep_lock`, one process at a time per
study: an ``fcntl.flock`` on ``<journal>.sweep-lock`` (or ``<db>.sweep-lock``
for SQLite), and a PostgreSQL session-level advisory lock
(``pg_advisory_lock``) keyed by the study name for PostgreSQL. Why a lock and
not a unique-key scheme: the decision "this cell has no live or finished
trial, so queue it" reads the whole study and then writes; Optuna's
``enqueue_trial(skip_if_exists=True)`` documents that it can duplicate under
concurrency, and its storages have no unique constraint we could lean on. A
lock held for the milliseconds of that read-then-write is simple, is released
by the kernel or the server when its holder dies, and costs nothing next to a
training run. (Popping a waiting trial is itself atomic in both storages, see
``tests/test_sweep.py::test_journal_pop_is_atomic``; the lock also stops a
worker from ``ask()``-ing when the queue just emptied, which would create a
stray trial.)

Example:
    >>> import tempfile
    >>> url = resolve_storage(None, None, Path(tempfile.mkdtemp()), "demo")
    >>> url.endswith("demo/journal.log"), kind_of(url)
    (True, 'journal')
    >>> redact("postgresql://me:secret@db/lab")
    'postgresql://me:***@db/lab'
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path

from lab.errors import UserError
from sweeps.journal import FlockLock, check_journal, journal_backend
from sweeps.storage_url import redact, with_driver

JOURNAL_NAME = "journal.log"


def kind_of(url: str) -> str:
    """``postgresql``, ``sqlite`` or ``journal`` (a file path).

    Example:
        >>> kind_of("postgresql+psycopg2://h/db"), kind_of("sqlite:///x.db"), kind_of("runs/x/journal.log")
        ('postgresql', 'sqlite', 'journal')
    """
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme == "sqlite":
        return "sqlite"
    if scheme:
        raise UserError(f"unsupported storage '{redact(url)}'; use postgresql://..., sqlite:///... or a journal file path")
    return "journal"


def resolve_storage(cli: str | None, spec: str | None, runs_root: Path, study: str) -> str:
    """The storage URL of a sweep: ``--storage``, else the spec's, else ``<runs>/<study>/journal.log``.

    A file path comes back absolute, so every worker agrees on it.

    Example:
        >>> resolve_storage("postgresql+psycopg2://h/db", "x.log", Path("runs"), "s")
        'postgresql+psycopg2://h/db'
        >>> resolve_storage(None, None, Path("/tmp/runs"), "s")
        '/tmp/runs/s/journal.log'
    """
    url = cli or spec
    if not url:
        return str((Path(runs_root) / study / JOURNAL_NAME).resolve())
    url = os.path.expandvars(url.strip())
    if "://" in url:
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        kind_of(url)
        return with_driver(url)
    return str(Path(url).expanduser().resolve())


def _connect_error(url: str, e: Exception) -> UserError:
    """One line naming the storage (password hidden) and the root cause of a driver or SQLAlchemy error."""
    root = e
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    lines = [ln.strip() for ln in str(getattr(root, "orig", None) or root).splitlines() if ln.strip()]
    return UserError(f"cannot reach storage {redact(url)}: {redact(lines[0])[:200] if lines else root.__class__.__name__}")


def quiet_optuna() -> None:
    """Optuna's INFO lines and its experimental-feature warnings off (our own messages say what happens).

    Example:
        >>> quiet_optuna()
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used.*")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def storage_exists(url: str) -> bool:
    """False for a journal/SQLite file that is not there yet (status must not create one).

    Example:
        >>> storage_exists("/nonexistent/journal.log")
        False
    """
    kind = kind_of(url)
    if kind == "journal":
        return Path(url).is_file()
    if kind == "sqlite":
        path = url.split(":///", 1)[-1]
        return path in ("", ":memory:") or Path(path).is_file()
    return True


def _existing(url: str) -> str:
    """The storage a reader names: a folder holding journal.log or an SQLite file by its path, as a URL; a missing
    file is a UserError."""
    if "://" in url:
        file = url.split(":///", 1)[1] if url.startswith("sqlite:///") else ""
        if file and file != ":memory:" and not Path(file).is_file():
            raise UserError(f"storage {url} does not exist (no file {file})")
        return url
    path = Path(url)
    if path.is_dir():
        path = path / JOURNAL_NAME
    if not path.is_file():
        raise UserError(f"storage {url} does not exist")
    with open(path, "rb") as f:
        if f.read(16) == b"SQLite format 3\x00":
            return f"sqlite:///{path.resolve()}"
    return str(path)


def open_storage(url: str, spec=None, *, create: bool = False):
    """An Optuna storage for ``url``, or a one-line UserError if it cannot be reached.

    ``url`` is what :func:`resolve_storage` gives: a PostgreSQL or SQLite URL,
    or a journal file path. With ``create`` (the sweeps, which write) a
    missing journal file, its folder and an RDB's tables are created. Without
    it (analysis, which reads) nothing is: a missing file is an error, the
    database is touched at once (an unreachable server fails here, not in the
    middle of a figure), and a folder holding ``journal.log`` or the path of an
    SQLite file are accepted too.

    Journal files are checked first (:func:`sweeps.journal.check_journal`) and get the flock
    lock and a backend whose every append first sets aside a torn last record
    (:func:`sweeps.journal.torn_tail`), under that lock; RDB storages get heartbeats
    (``spec.heartbeat_seconds`` / ``spec.grace_seconds``) and Optuna's retry
    callback, which re-queues a heartbeat-stale trial with the same params and
    user attributes (so with the same cell, and the same run folder).

    Example:
        >>> import tempfile
        >>> st = open_storage(str(Path(tempfile.mkdtemp()) / "journal.log"), create=True)
        >>> type(st).__name__
        'JournalStorage'
        >>> open_storage("/nonexistent/journal.log")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: storage /nonexistent/journal.log does not exist
    """
    import optuna

    quiet_optuna()
    url = str(url) if create else _existing(str(url))
    kind = kind_of(url)
    if kind == "journal":
        path = Path(url)
        if path.is_dir():
            raise UserError(f"storage {url} is a folder; give a journal file path (e.g. {path / JOURNAL_NAME})")
        check_journal(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = journal_backend(path)
            return optuna.storages.JournalStorage(backend)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot open storage {url}: {e}") from None
    if kind == "sqlite" and create:
        Path(url.split(":///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    heartbeat = getattr(spec, "heartbeat_seconds", 10)
    grace = getattr(spec, "grace_seconds", 120)
    max_retry = getattr(spec, "max_retries", 2)
    callback_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if callback_cls is not None:  # optuna >= 4.9
        cb_kwargs = {"heartbeat_stale_trial_callback": callback_cls(max_retry=max_retry)}
    else:
        cb_kwargs = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)}
    engine_kwargs = {"pool_pre_ping": True}
    if kind == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat arguments are "experimental"
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                                 grace_period=grace, skip_table_creation=not create, **cb_kwargs)
            if not create:
                storage.get_all_studies()  # touch the database now
            return storage
    except ModuleNotFoundError as e:
        raise UserError(f"storage {redact(url)} needs the '{e.name}' package (pip install psycopg2-binary)") from None
    except Exception as e:  # sqlalchemy OperationalError / ArgumentError: unreachable or malformed URL
        raise _connect_error(url, e) from None


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


_PG_ENGINES: dict[str, object] = {}


@contextlib.contextmanager
def sweep_lock(url: str, name: str):
    """Hold the study's sweep lock (see the module docstring) for the ``with`` body.

    Example:
        >>> import tempfile
        >>> url = str(Path(tempfile.mkdtemp()) / "journal.log")
        >>> with sweep_lock(url, "demo"):
        ...     pass
    """
    kind = kind_of(url)
    if kind in ("journal", "sqlite"):
        path = Path(url if kind == "journal" else url.split(":///", 1)[-1])
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FlockLock(str(path) + ".sweep")  # -> <file>.sweep.flock
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = _PG_ENGINES.get(url)
    if engine is None:
        try:
            engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
        except ModuleNotFoundError as e:
            raise UserError(f"storage {redact(url)} needs the '{e.name}' package (pip install psycopg2-binary)") from None
        except Exception as e:
            raise _connect_error(url, e) from None
        _PG_ENGINES[url] = engine
    key = _advisory_key(f"mtplab-sweep:{name}")
    try:
        conn = engine.connect()
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise _connect_error(url, e) from None
    try:
        yield
    finally:
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
        finally:
            conn.close()  # the session ends: the server drops any lock it still holds


__all__ = ["resolve_storage", "open_storage", "sweep_lock", "storage_exists", "kind_of", "redact", "with_driver",
           "quiet_optuna"]
