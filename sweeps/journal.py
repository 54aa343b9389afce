"""The journal file a study lives in by default: a lock that dies with its process, and damage found early.

Optuna's ``JournalFileBackend`` gets an ``fcntl.flock`` lock (:class:`FlockLock`)
instead of Optuna's default symlink lock: the kernel releases a flock when
its process dies, so a worker killed with ``kill -9`` in the middle of a
write never leaves a stale lock behind (the symlink lock would stall everyone
for its 30 s grace period, and then break the lock by force).

**A damaged journal** is found before anything is written to it
(:func:`check_journal`): a bad record before the last line is refused with
one line, the file left byte for byte as it was. A torn last record (a
writer killed mid-write, a full disk; Optuna never read it) is moved aside
to ``journal.log.torn-<time>`` with a message by the next append, which
checks the file's last record first, under the journal lock
(:func:`journal_backend`): no record is ever written after a torn one, and a
command that writes nothing (status, a refused spec) changes nothing.

Example:
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "journal.log"
    >>> _ = p.write_bytes(b'{"op_code": 0}\\n{"op_code": 5, "tri')
    >>> torn_tail(p), check_journal(p)
    (15, None)
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from lab.errors import UserError


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
    append sets it aside first (see :func:`journal_backend`), so it passes here.
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


def journal_backend(path: str | Path):
    """Optuna's JournalFileBackend over ``path`` with the flock lock, whose appends first set aside a torn last
    record (under that lock).

    It keeps its own file path and lock rather than reading the base class's private attributes.

    Example:
        >>> import tempfile
        >>> backend = journal_backend(Path(tempfile.mkdtemp()) / "journal.log")
        >>> list(backend.read_logs(0))
        []
    """
    import optuna

    base = optuna.storages.journal.JournalFileBackend

    class _Backend(base):
        def __init__(self, file_path: str, lock: FlockLock):
            super().__init__(file_path, lock_obj=lock)  # Optuna calls only acquire() and release() on it
            self.path, self.lock = Path(file_path), lock

        def append_logs(self, logs) -> None:
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            self.lock.acquire()
            try:
                offset = torn_tail(self.path)
                if offset is not None:
                    _set_aside(self.path, offset)
                with open(self.path, "ab") as f:
                    f.write(text.encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                self.lock.release()

    return _Backend(str(path), FlockLock(str(path)))


__all__ = ["FlockLock", "torn_tail", "check_journal", "journal_backend"]
