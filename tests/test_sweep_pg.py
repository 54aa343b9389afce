"""Sweeps against a real PostgreSQL server: two workers (as on two hosts), exactly-once cells.

The server is a private cluster in a temporary folder (tests/pg.py), started
and always stopped by the fixture. Without the server binaries the tests skip
locally and fail under CI (CI=true), where .ci/run installs them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pg import bin_dir, private_cluster

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
description: tiny PostgreSQL sweep
task: {name: polyarith, train_examples: 500, test_per_op: 3}
grid: {n: [1, 2], seed: [0, 1]}
fixed: {model.size: custom, model.d_model: 32, model.layers: 3, model.n_heads: 2, train.threads: 1,
        train.progress: false, train.warmup_steps: 1, train.eval_interval: 1000}
budget: {steps: 3, batch_tokens: 256, context: 64}
heartbeat_seconds: 1
grace_seconds: 20
"""


@pytest.fixture(scope="module")
def pg_url():
    if bin_dir() is None:
        message = "PostgreSQL server binaries (initdb) not found; .ci/run installs them"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with private_cluster() as url:
        yield url


def _env(tmp_path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["MTPLAB_CACHE_DIR"] = str(tmp_path / "cache")
    return env


def test_two_hosts_one_postgres_study_each_cell_once(tmp_path, pg_url):
    import optuna
    from optuna.trial import TrialState

    from sweeps.storage import resolve_storage

    spec = tmp_path / "pgsweep.yaml"
    spec.write_text(SPEC)
    # Two `sweep run` processes started together, each with its own runs folder, as on two hosts.
    procs = []
    for host in ("a", "b"):
        (tmp_path / host).mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "lab", "sweep", "run", str(spec), "--no-report", "--storage", pg_url],
            cwd=tmp_path / host, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path)))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        print(out)
        assert p.returncode == 0, out
        assert "Traceback" not in out and "locked" not in out.lower(), out

    url = resolve_storage(pg_url, None, tmp_path, "pgsweep")
    study = optuna.load_study(study_name="pgsweep", storage=url)
    trials = study.get_trials()
    done = [t.user_attrs["run_key"] for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(done) == sorted(f"n={n},seed={s}" for n in (1, 2) for s in (0, 1))  # each cell exactly once
    assert len(trials) == 4
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers took cells
    for t in trials:
        assert t.user_attrs["metrics"] and "git_commit" in t.user_attrs["env"]
        assert Path(t.user_attrs["run_dir"]).parent.parent.parent.name in ("a", "b")

    status = subprocess.run([sys.executable, "-m", "lab", "sweep", "status", str(spec), "--storage", pg_url],
                            cwd=tmp_path, capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert status.returncode == 0, status.stderr
    assert "4 done, 0 running, 0 failed, 0 pending of 4 cells" in status.stdout
    assert "postgres@127.0.0.1" in status.stdout


def test_postgres_heartbeat_retries_a_stale_trial(tmp_path, pg_url, monkeypatch):
    """A RUNNING trial whose heartbeat stopped (its host vanished) is failed and re-queued by Optuna's
    retry callback, then trained by the next worker; the cell still completes exactly once."""
    import time

    import optuna
    from optuna.trial import TrialState

    from sweeps.protocol import queue_cells
    from sweeps.runner import run_sweep
    from sweeps.spec import cells, load_spec
    from sweeps.storage import resolve_storage, sweep_lock
    from sweeps.study import open_study

    import torch

    monkeypatch.setenv("MTPLAB_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    spec_path = tmp_path / "pgstale.yaml"
    spec_path.write_text(SPEC.replace("grid: {n: [1, 2], seed: [0, 1]}", "grid: {n: [1]}").replace(
        "grace_seconds: 20", "grace_seconds: 2"))
    spec = load_spec(spec_path)
    url = resolve_storage(pg_url, None, tmp_path, spec.study)
    study = open_study(spec, url, create=True)
    with sweep_lock(url, spec.study):
        queue_cells(study, spec, cells(spec))
    lost = study.ask()  # a worker on another host claims the cell ...
    lost.set_user_attr("host", "elsewhere")
    study._storage.record_heartbeat(lost._trial_id)  # ... beats once, and its host dies
    time.sleep(3)  # past the grace period
    try:
        assert run_sweep(spec, storage=pg_url, runs_root=tmp_path / "runs", out=lambda *a: None) == 0
    finally:
        torch.set_num_threads(threads)
    trials = optuna.load_study(study_name=spec.study, storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].system_attrs.get("failed_trial") == trials[0].number  # re-queued by the retry callback
    assert trials[1].user_attrs["run_key"] == "n=1"
