"""Where a study lives, and the one lock that makes queueing exactly-once.

Three kinds of storage, all standard Optuna, so ``optuna-dashboard`` opens them:

* **a journal file** (the default: ``runs/<study>/journal.log``, no server):
  Optuna's ``JournalStorage`` over ``JournalFileBackend``. Append-only, safe
  for many processes on one machine (or on a shared filesystem with working
  ``flock``). We give the backend an ``fcntl.flock`` lock instead of Optuna's
  default symlink lock: the kernel releases a flock when its process dies, so
  a worker killed with ``kill -9`` in the middle of a write never leaves a
  stale lock behind (the symlink lock would stall everyone for its 30 s grace
  period, and then break the lock by force).
  **A damaged journal** is found before anything is written to it
  (:func:`check_journal`): a bad record before the last line is refused with
  one line, the file left byte for byte as it was. A torn last record (a
  writer killed mid-write, a full disk; Optuna never read it) is moved aside
  to ``journal.log.torn-<time>`` with a message by the next append, which
  checks the file's last record first, under the journal lock: no record is
  ever written after a torn one, and a command that writes nothing (status,
  a refused spec) changes nothing.
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
import fcntl
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

from lab.errors import UserError
from lab.storage_url import redact, with_driver

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


class FlockLock:
    """An ``fcntl.flock`` lock for Optuna's JournalFileBackend (released by the kernel if we die).

    Example:
        >>> import tempfile
        >>> lock = FlockLock(str(Path(tempfile.mkdtemp()) / "j.log"))
        >>> lock.acquire()
        True
        >>> lock.release()
    """

    def __init__(self, path: str):
        self.path = path + ".flock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _is_record(line: bytes) -> bool:
    """A journal line Optuna can replay: newline-terminated JSON object with an op code."""
    if not line.endswith(b"\n"):
        return False
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and "op_code" in obj


def _last_line_start(f, size: int) -> int:
    """Offset where the file's last line starts (the file's final newline belongs to that line)."""
    end = size - 1  # a newline at the very end terminates the last line; look before it
    block = 1 << 16
    while end > 0:
        lo = max(0, end - block)
        f.seek(lo)
        chunk = f.read(end - lo)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return lo + i + 1
        end = lo
    return 0


def torn_tail(path: Path) -> int | None:
    """Offset of a torn last record of a journal file (cheap: reads the last line only), or None.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "journal.log"
        >>> _ = p.write_bytes(b'{"op_code": 0}\\n{"op_code": 5, "tri')
        >>> torn_tail(p)
        15
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None
            start = _last_line_start(f, size)
            f.seek(start)
            return None if _is_record(f.read()) else start
    except FileNotFoundError:
        return None


def _set_aside(path: Path, offset: int) -> Path:
    """Move bytes ``offset:`` of the journal into a backup file and cut them off (hold the journal lock)."""
    with open(path, "rb") as f:
        f.seek(offset)
        torn = f.read()
    backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    with open(backup, "wb") as f:
        f.write(torn)
        f.flush()
        os.fsync(f.fileno())
    os.truncate(path, offset)
    print(f"sweep: {path} ended with a torn record ({len(torn)} bytes: a write cut short by a crash or a "
          f"full disk); set it aside in {backup.name} and continuing", file=sys.stderr, flush=True)
    return backup


def check_journal(path: str | Path) -> None:
    """Refuse a journal file with a bad record before its last line: a one-line UserError, the file untouched.

    Every line must be a newline-terminated JSON record. A bad *last* line is
    what a crash mid-write leaves: Optuna skips it when reading, and the next
    append sets it aside first (see :func:`open_storage`), so it passes here.
    A bad line anywhere else means the study cannot be read past it.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "journal.log"
        >>> _ = p.write_bytes(b'{"op_code": 0}\\ngarbage\\n{"op_code": 1}\\n')
        >>> check_journal(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lab.errors.UserError: journal ... line 2 of 3 is not a journal record ...
    """
    path = Path(path)
    if not path.is_file():
        return
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read storage {path}: {e}") from None
    lines = data.splitlines(keepends=True)
    bad = [i for i, line in enumerate(lines[:-1]) if not _is_record(line)]
    if bad:
        first = bad[0]
        shown = lines[first][:60].decode("utf-8", "replace").rstrip("\n")
        raise UserError(
            f"journal {path}: line {first + 1} of {len(lines)} is not a journal record ({shown!r}); the study "
            f"cannot be read past it and nothing was written. Restore the file from a backup, or cut it at "
            f"line {first} (head -n {first}) to keep the records before it")


def _journal_backend_class():
    """Optuna's JournalFileBackend whose appends first set aside a torn last record (under the lock)."""
    import optuna

    base = optuna.storages.journal.JournalFileBackend

    class _Backend(base):
        def append_logs(self, logs) -> None:
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            self._lock.acquire()
            try:
                path = Path(self._file_path)
                offset = torn_tail(path)
                if offset is not None:
                    _set_aside(path, offset)
                with open(path, "ab") as f:
                    f.write(text.encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                self._lock.release()

    return _Backend


def _journal_lock_class():
    try:
        from optuna.storages.journal import BaseJournalFileLock
    except ImportError:  # not re-exported in optuna 4.x/5.x
        from optuna.storages.journal._file import BaseJournalFileLock

    class _Lock(FlockLock, BaseJournalFileLock):
        pass

    return _Lock


def _connect_error(url: str, e: Exception) -> UserError:
    first = (str(getattr(e, "orig", None) or e).strip().splitlines() or [e.__class__.__name__])[0]
    return UserError(f"cannot reach storage {redact(url)}: {first}")


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


def open_storage(url: str, spec=None):
    """An Optuna storage for ``url``, or a one-line UserError if it cannot be reached.

    Journal files are checked first (:func:`check_journal`) and get the flock
    lock and a backend whose every append first sets aside a torn last record
    (:func:`torn_tail`), under that lock; RDB storages get heartbeats
    (``spec.heartbeat_seconds`` / ``spec.grace_seconds``) and Optuna's retry
    callback, which re-queues a heartbeat-stale trial with the same params and
    user attributes (so with the same cell, and the same run folder).

    Example:
        >>> import tempfile
        >>> st = open_storage(str(Path(tempfile.mkdtemp()) / "journal.log"))
        >>> type(st).__name__
        'JournalStorage'
    """
    import optuna

    kind = kind_of(url)
    if kind == "journal":
        path = Path(url)
        if path.is_dir():
            raise UserError(f"storage {url} is a folder; give a journal file path (e.g. {path / JOURNAL_NAME})")
        check_journal(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = _journal_backend_class()(str(path), lock_obj=_journal_lock_class()(str(path)))
            return optuna.storages.JournalStorage(backend)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot open storage {url}: {e}") from None
    if kind == "sqlite":
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
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                              grace_period=grace, **cb_kwargs)
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


__all__ = ["resolve_storage", "open_storage", "sweep_lock", "storage_exists", "kind_of", "redact", "FlockLock",
           "check_journal", "torn_tail"]
