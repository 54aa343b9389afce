"""Reading a run folder: ``eval.json`` (eval history, selected checkpoints, milestones) and ``metrics.jsonl``.

A trial's ``run_dir`` may be absolute or relative; a relative one is tried as
given, then under ``run_root`` (by default the folder of the journal file).
A file that is missing, torn or being rewritten by a running job reads as
None, never as an error: the figures that need it say so and are skipped.

Example:
    >>> read_eval("/nonexistent") is None and read_run_metrics("/nonexistent") is None
    True
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def find_run_file(run_dir, name: str, run_root=None) -> Path | None:
    """``run_dir/name`` if it is a file, else ``run_root/run_dir/name`` for a relative ``run_dir``; else None.

    Example:
        >>> find_run_file("/nonexistent", "eval.json") is None, find_run_file(None, "eval.json") is None
        (True, True)
    """
    if not isinstance(run_dir, (str, Path)) or not str(run_dir):
        return None
    path = Path(str(run_dir)) / name
    if path.is_file():
        return path
    if run_root is not None and not Path(str(run_dir)).is_absolute():
        path = Path(run_root) / str(run_dir) / name
        if path.is_file():
            return path
    return None


def read_eval(run_dir, run_root=None) -> dict | None:
    """A run folder's ``eval.json`` (None if it is missing, unreadable or not a mapping).

    Example:
        >>> read_eval("/nonexistent") is None
        True
    """
    path = find_run_file(run_dir, "eval.json", run_root)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # being rewritten by a running job
    return data if isinstance(data, dict) else None


def read_run_metrics(run_dir) -> pd.DataFrame | None:
    """A run folder's ``metrics.jsonl`` as a DataFrame (None if it is missing or unreadable).

    Example:
        >>> read_run_metrics("/nonexistent") is None
        True
    """
    path = Path(str(run_dir)) / "metrics.jsonl" if run_dir else None
    if path is None or not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a torn last line of a running job
    return pd.DataFrame(rows) if rows else None


def missing_run_folders(frame: pd.DataFrame, run_root=None) -> list[str]:
    """The finished trials of ``frame`` whose run folder is gone (no ``eval.json`` or ``metrics.jsonl``).

    Their numbers still come from the study, but the figures drawn from run
    folders (learning curves, tokens to a milestone) cannot include them; the
    report and the figure captions name them. One entry per trial:
    ``"<run_key or trial> (<run_dir>)"``.

    Example:
        >>> missing_run_folders(pd.DataFrame({"trial": [3], "run_key": ["n=1,seed=0"], "run_dir": ["/gone"]}))
        ['n=1,seed=0 (/gone)']
    """
    out = []
    for row in frame.to_dict("records"):
        run_dir = row.get("run_dir")
        if find_run_file(run_dir, "eval.json", run_root) or find_run_file(run_dir, "metrics.jsonl", run_root):
            continue
        name = row.get("run_key") or f"trial {row.get('trial', '?')}"
        out.append(f"{name} ({run_dir or 'no run_dir'})")
    return out
