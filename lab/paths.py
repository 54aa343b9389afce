"""Output paths: checked before any work, written atomically.

Every file a command writes (``--out``, ``--json``, a run folder, a cache
entry) goes through here. :func:`check_output_file` and
:func:`check_output_dir` run before the work, so a destination that cannot be
written (a missing or read-only folder, a path under a file, a folder where a
file is expected) is one line and exit status 2 *before* an evaluation or a
benchmark has run, not a traceback after it. :func:`atomic_replace` writes a
temporary sibling and renames it into place, so a crash or an error never
leaves a half-written file, and no temporary file is left behind.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> check_output_file(d / "out.json", "--json") == d / "out.json"
    True
    >>> check_output_file(d, "--json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lab.errors.UserError: --json ... is a folder; give a file path (a new file inside it, say)
    >>> atomic_write_text(d / "out.json", "{}")
    >>> (d / "out.json").read_text()
    '{}'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lab.errors import UserError


def atomic_replace(path: str | Path, write) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    A crash (or an exception from ``write``) leaves ``path`` as it was, never
    half-written, and no temporary file behind.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.txt"
        >>> atomic_replace(p, lambda tmp: tmp.write_text("hello"))
        >>> p.read_text()
        'hello'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_replace`)."""
    atomic_replace(path, lambda tmp: tmp.write_text(text))


def _file_above(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is a file, not a folder (``file/sub``), or None."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(".")


def _probe(folder: Path, flag: str, path: Path) -> None:
    """Create and remove a temporary file in ``folder``: the only sure test that it can be written."""
    try:
        fd, name = tempfile.mkstemp(prefix=".mtplab-probe-", dir=folder)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write in {folder} ({e.strerror or e}); choose another path") from None
    os.close(fd)
    os.unlink(name)


def check_output_file(path: str | Path, flag: str) -> Path:
    """Check, before any work, that a file can be written at ``path``; a one-line UserError if not.

    The folder must exist (it is not created) and be writable; ``path`` must
    not be a folder or lie under a file.

    Example:
        >>> check_output_file("/nonexistent/dir/x.jsonl", "--out")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: --out /nonexistent/dir/x.jsonl: folder /nonexistent/dir does not exist; create it first
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file path (a new file inside it, say)")
    above = _file_above(path)
    if above is not None:
        raise UserError(f"{flag} {path}: {above} is a file, not a folder")
    folder = path.parent
    if not folder.exists():
        raise UserError(f"{flag} {path}: folder {folder} does not exist; create it first")
    _probe(folder, flag, path)
    return path


def check_output_dir(path: str | Path, flag: str) -> Path:
    """Check, before any work, that a folder can be created (or written) at ``path``; a one-line UserError if not.

    Missing parents are fine (they are created later); ``path`` must not be
    a file or lie under one, and the nearest existing folder must be writable.
    Nothing is created here.

    Example:
        >>> check_output_dir("/proc/mtplab-run", "--out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lab.errors.UserError: --out /proc/mtplab-run: cannot write in /proc (...); choose another path
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} exists and is a file; give a folder")
    above = _file_above(path)
    if above is not None:
        raise UserError(f"{flag} {path}: {above} is a file, not a folder")
    _probe(path if path.is_dir() else _nearest_existing(path), flag, path)
    return path
