"""Every file the tests, the lab or its libraries write goes under one temporary folder, removed at the end.

``TMPDIR`` (inherited by the worker processes the sweep tests start) and
``tempfile.tempdir`` point into it, so ``tempfile.mkdtemp()`` in doctests,
pytest's own ``tmp_path`` folders and every cache land there; nothing is left
in ``/tmp`` after a run.
"""

import os
import shutil
import tempfile

import pytest

_ROOT = tempfile.mkdtemp(prefix="mtplab-tests-")
os.chmod(_ROOT, 0o755)  # the private PostgreSQL cluster (tests/pg.py) runs as the postgres user under it
os.environ["TMPDIR"] = _ROOT
tempfile.tempdir = _ROOT
for var, sub in (("MTPLAB_CACHE_DIR", "datasets"), ("TIKTOKEN_CACHE_DIR", "tiktoken"),
                 ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("MPLCONFIGDIR", "matplotlib")):
    os.environ.setdefault(var, os.path.join(_ROOT, sub))
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_unconfigure(config):
    shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture
def crash_at(monkeypatch):
    """``crash_at(step)``: training raises RuntimeError("simulated crash") at that step; returns ``disarm()``.

    Everything the run did before (log lines, checkpoints) stays, as after a kill.
    """
    from lab import train

    original = train._Run.train_step

    def arm(step):
        def crashing(self, log=True):
            if self.step == step:
                raise RuntimeError("simulated crash")
            return original(self, log)

        monkeypatch.setattr(train._Run, "train_step", crashing)
        return lambda: monkeypatch.setattr(train._Run, "train_step", original)

    return arm


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module: tiny models gain nothing from threads, and on a busy machine their spin-waits cost seconds."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
