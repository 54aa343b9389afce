"""Run folders and checkpoints.

A run folder is self-describing::

    config.json     {"task": ..., "model": ..., "train": ..., "meta": {versions, git commit, params}}
    metrics.jsonl   one JSON object per logged step
    eval.json       {"step", "metrics", "objective", "best": {"step", "metrics"}, "history": [...]}
    checkpoint.pt   model + optimizer + step + data position + RNG states + eval history

Every file is written to a temporary name and renamed into place, so a
killed run leaves the previous complete version, never a torn one.

Example:
    >>> import tempfile, json
    >>> p = Path(tempfile.mkdtemp()) / "eval.json"
    >>> write_json(p, {"step": 3})
    >>> json.loads(p.read_text())
    {'step': 3}
"""

from __future__ import annotations

import json
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from lab.config import RunConfig
from lab.errors import UserError
from lab.paths import atomic_replace  # the one atomic write of the lab (re-exported here)

CHECKPOINT = "checkpoint.pt"


def write_json(path: Path, obj) -> None:
    """Write JSON atomically."""
    atomic_replace(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True)))


def git_commit() -> str | None:
    """The lab's git commit, if it runs from a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Versions and machine facts stored with every run."""
    import tiktoken

    return {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "tiktoken": tiktoken.__version__, "platform": platform.platform(), "git_commit": git_commit(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def read_config(run_dir: Path, tasks) -> RunConfig:
    """The RunConfig stored in a run folder (UserError if missing or corrupt).

    ``tasks`` looks up the stored task's class by name (``generators.registry.get``).

    Example:
        >>> from generators import registry
        >>> read_config(Path("/nonexistent"), registry.get)
        Traceback (most recent call last):
        ...
        lab.errors.UserError: /nonexistent is not a run folder (no config.json)
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.json)")
    try:
        data = json.loads(path.read_text())
        data.pop("meta", None)
        return RunConfig.from_dict(data, tasks)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is corrupt ({e.__class__.__name__}: {e})") from None


def rng_state() -> dict:
    return {
        "python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Atomically write checkpoint.pt."""
    atomic_replace(Path(run_dir) / CHECKPOINT, lambda p: torch.save(state, p))


def load_checkpoint(run_dir: Path, map_location="cpu") -> dict:
    """Read checkpoint.pt; a UserError if it is missing or cannot be read."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise UserError(f"no checkpoint in {run_dir} (expected {path})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for a torn or foreign file
        raise UserError(f"checkpoint {path} is corrupt or unreadable ({e.__class__.__name__}); "
                        f"delete it to restart the run, or restore a copy") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise UserError(f"checkpoint {path} is not an mtplab checkpoint")
    return state
