"""A private, throwaway PostgreSQL cluster for tests (real server, no mocks).

:func:`private_cluster` runs ``initdb`` into a temporary folder, starts the
server on a free port (Unix socket in the same folder, TCP on 127.0.0.1,
``trust`` auth, ``fsync=off``), creates a database and yields its URL; it
always stops the server and deletes the folder afterwards. As root, the
server binaries run as the ``postgres`` OS user (``runuser -u postgres --``),
because PostgreSQL refuses to run as root.

When the binaries are missing the caller decides: tests skip locally but
*fail* under CI (``CI=true``), where ``.ci/run`` installs them.

Example:
    >>> bin_dir() is None or (bin_dir() / "initdb").exists()
    True
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb``, else ``initdb`` on PATH, else None.

    Example:
        >>> isinstance(bin_dir(), (Path, type(None)))
        True
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    """A TCP port nobody listens on right now.

    Example:
        >>> 1024 < free_port() < 65536
        True
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runner() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"]
    return ["sudo", "-u", "postgres"]


@contextlib.contextmanager
def private_cluster(db: str = "mtplab"):
    """Start a private PostgreSQL server; yield ``postgresql://postgres@127.0.0.1:PORT/db``; stop it.

    Example:
        >>> # with private_cluster() as url: run workers against url
    """
    bindir = bin_dir()
    if bindir is None:
        raise FileNotFoundError("initdb not found (install the PostgreSQL server, e.g. apt-get install postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="mtplab-pg-"))
    tmp.chmod(0o755)
    data, log = tmp / "data", tmp / "server.log"
    run_as = _runner()
    if run_as:
        shutil.chown(tmp, "postgres", "postgres")
    port = free_port()
    started = False
    try:
        subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, text=True, timeout=120)
        opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        proc = subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w",
                               "-t", "60", "start"], capture_output=True, text=True, timeout=90)
        started = True
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {proc.stderr}\n{log.read_text() if log.exists() else ''}")
        subprocess.run([*run_as, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db],
                       check=True, capture_output=True, text=True, timeout=60)
        yield f"postgresql://postgres@127.0.0.1:{port}/{db}"
    finally:
        if started:
            subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, text=True, timeout=60)
            for _ in range(50):  # wait for the postmaster to be gone before deleting its folder
                if not (data / "postmaster.pid").exists():
                    break
                time.sleep(0.1)
        shutil.rmtree(tmp, ignore_errors=True)
