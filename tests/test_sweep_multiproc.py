"""Sweeps whose trials each run on several processes (torchrun, gloo on the CPU): `sweep run --procs-per-trial 2`.

One sweep of 2 tiny cells, each a torchrun job of 2 processes (the costly
part: ~3 Python processes importing torch per cell): one cell fresh, one
resumed onto 2 processes from the checkpoint of a failed one-process attempt;
both end as the same cells trained in-process. And the combinations that
cannot fit, refused in one line before anything is written.
"""

import json
import math
from pathlib import Path

import pytest

from lab.cli import main
from sweeps.multiproc import host_cores

TINY = """\
task: {name: polyarith, train_examples: 300, test_per_op: 2, valid_per_op: 1}
grid: {n: [1, 2]}
fixed: {model.size: custom, model.d_model: 32, model.layers: 3, model.n_heads: 2,
        train.progress: false, train.log_interval: 1, train.warmup_steps: 1, train.threads: 1,
        train.eval_interval: 2, train.checkpoint_interval: 2, train.marginal_positions: 16}
budget: {steps: 4, batch_tokens: 256, context: 64}
heartbeat_seconds: 1
grace_seconds: 20
max_retries: 0
"""


@pytest.fixture
def lab_dir(tmp_path, monkeypatch, tmp_path_factory):
    """A working folder (runs/ goes here), a dataset cache for this file, one torch thread (restored afterwards)."""
    import torch

    monkeypatch.setenv("MTPLAB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "multiproc-cache"))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)


def trials(study: str):
    import optuna

    from sweeps.storage import open_storage

    loaded = optuna.load_study(study_name=study, storage=open_storage(f"runs/{study}/journal.log"))
    return loaded.get_trials()


@pytest.mark.skipif(host_cores() < 2, reason="2 processes per trial need 2 CPU cores")
def test_two_processes_per_trial_each_cell_once_like_in_process_and_resumed(lab_dir, capsys, crash_at):
    import torch
    from optuna.trial import TrialState

    # The reference: the same cells trained in this process.
    (lab_dir / "ref.yaml").write_text(TINY)
    assert main(["sweep", "run", "ref.yaml", "--no-report"]) == 0
    ref = {t.user_attrs["run_key"]: t for t in trials("ref")}

    # Cell n=2 first fails after its step-2 checkpoint (in this process, out of retries) ...
    (lab_dir / "two.yaml").write_text(TINY.replace("n: [1, 2]", "n: [2]"))
    disarm = crash_at(3)
    assert main(["sweep", "run", "two.yaml", "--no-report"]) == 1
    disarm()
    assert torch.load(lab_dir / "runs/two/n=2/checkpoint.pt", weights_only=False)["step"] == 2
    # ... then the grown grid runs with 2 processes per trial: n=1 afresh, n=2 resumed onto 2 processes.
    (lab_dir / "two.yaml").write_text(TINY)
    capsys.readouterr()
    assert main(["sweep", "run", "two.yaml", "--procs-per-trial", "2", "--retry-failed", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "1 worker x 2 CPU processes per trial" in out and "n=2 done" in out and "resumed from step 2" in out

    done = {t.user_attrs["run_key"]: t for t in trials("two") if t.state == TrialState.COMPLETE}
    assert len(done) == len([t for t in trials("two") if t.state == TrialState.COMPLETE]) == 2  # each cell once
    assert done["n=2"].user_attrs["resumed_from_step"] == 2 and not ref["n=2"].user_attrs.get("resumed_from_step")
    assert set(done["n=1"].user_attrs) == set(ref["n=1"].user_attrs)
    for key, t in done.items():
        assert math.isfinite(t.value) and set(ref[key].user_attrs) <= set(t.user_attrs)
        folder = Path(t.user_attrs["run_dir"])
        stored = json.loads((folder / "eval.json").read_text())
        assert t.user_attrs["metrics"] == stored["metrics"]
        assert set(stored["metrics"]) == set(ref[key].user_attrs["metrics"])
        assert json.loads((folder / "config.json").read_text())["meta"]["processes"] == (2 if key == "n=1" else 1)
        for attr in ("step", "tokens_seen", "params", "config", "best_step"):
            assert t.user_attrs[attr] == ref[key].user_attrs[attr], attr
        # the one-process run, up to the order of float additions (lab/distributed.py), also after the resume
        assert t.value == pytest.approx(ref[key].value, abs=1e-6)
        assert sorted(t.intermediate_values) == sorted(ref[key].intermediate_values) == [2, 4]  # eval.json's evals
        assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "config.json", "eval.json", "metrics.jsonl"]


BAD = {
    "more processes than cores": (["--procs-per-trial", "4096"], "CPU cores"),
    "workers x processes beyond the cores": (["--workers", str(host_cores()), "--procs-per-trial", "2"], "CPU cores"),
    "both flags": (["--procs-per-trial", "2", "--gpus-per-trial", "2"], "exclude each other"),
    "CPU processes with GPUs": (["--procs-per-trial", "2", "--gpus", "0,1"], "--gpus-per-trial"),
    "group size not dividing the GPUs": (["--gpus", "0,1,2", "--gpus-per-trial", "2"], "does not divide"),
    "group size beyond the GPUs": (["--gpus", "0", "--gpus-per-trial", "2"], "does not divide"),
    "workers x GPUs beyond the GPUs": (["--gpus", "0,1,2,3", "--gpus-per-trial", "2", "--workers", "3"],
                                       "3 workers x 2 GPUs per trial = 6 GPUs"),
    "zero processes": (["--procs-per-trial", "0"], "at least 1"),
    "batch not splitting": (["--gpus", "0,1,2", "--gpus-per-trial", "3"], "cell n=1: a global batch of 4 sequences"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_combination_that_cannot_fit_is_one_line_exit_2(lab_dir, capsys, case):
    flags, needle = BAD[case]
    (lab_dir / "tiny.yaml").write_text(TINY)
    assert main(["sweep", "run", "tiny.yaml", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mtplab: error: ") and needle in err, err
    assert not (lab_dir / "runs").exists()  # refused before the storage or a run folder was touched


# Loaded by every Python process of the job (PYTHONPATH): at step 3, rank 1 SIGKILLs itself ("rank") or its torchrun
# agent ("agent"), once (the marker file), as an out-of-memory kill or a dead host would.
KILL_HOOK = """\
import os, signal
if os.environ.get("RANK") == "1" and os.environ.get("MTPLAB_TEST_KILL"):
    from lab import train
    who, marker = os.environ["MTPLAB_TEST_KILL"].split(":", 1)
    original = train._Run.train_step

    def train_step(self, log=True):
        if self.step == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid() if who == "rank" else os.getppid(), signal.SIGKILL)
        return original(self, log)

    train._Run.train_step = train_step
"""


@pytest.mark.skipif(host_cores() < 2, reason="2 processes per trial need 2 CPU cores")
@pytest.mark.parametrize("who, message", [("rank", "rank 1 was killed (SIGKILL)"),
                                          ("agent", "torchrun was killed (SIGKILL)")])
def test_a_killed_job_fails_its_trial_with_the_cause_and_the_retry_resumes_it(lab_dir, capsys, monkeypatch, who, message):
    from optuna.trial import TrialState

    # retries 3: a retry launched within a second of the kill has once aborted in gloo's setup (SIGABRT, seen once
    # in 6 runs); the sweep retries that too, as any failed job
    spec = TINY.replace("n: [1, 2]", "n: [2]").replace("max_retries: 0", "max_retries: 3")
    (lab_dir / "ref.yaml").write_text(spec)
    assert main(["sweep", "run", "ref.yaml", "--no-report"]) == 0
    (ref,) = trials("ref")

    hooks = lab_dir / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILL_HOOK)
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    monkeypatch.setenv("MTPLAB_TEST_KILL", f"{who}:{lab_dir / 'killed'}")
    (lab_dir / "gpus.yaml").write_text(spec)
    capsys.readouterr()
    # A fake device list on the CPU: each trial a torchrun job of 2 processes (gloo, as no GPU is visible).
    assert main(["sweep", "run", "gpus.yaml", "--gpus", "0,1", "--gpus-per-trial", "2", "--no-report"]) == 0
    assert (lab_dir / "killed").exists()
    out = capsys.readouterr().out
    assert "1 worker x 2 processes per trial" in out, out

    failed = [t for t in trials("gpus") if t.state == TrialState.FAIL]
    done = [t for t in trials("gpus") if t.state == TrialState.COMPLETE]
    assert 1 <= len(failed) <= 3 and len(done) == 1  # the cell completed exactly once, after the failed attempt(s)
    first = min(failed, key=lambda t: t.number)
    assert message in first.user_attrs["failure"], first.user_attrs["failure"]
    # the retry resumed from the step-2 checkpoint; with torchrun killed the ranks may still write step 4's before
    # they notice (within a second), and a failed retry may have written it: then from that one
    assert done[0].user_attrs["resumed_from_step"] in (2, 4)
    assert done[0].value == pytest.approx(ref.value, abs=1e-6)  # and ended as the uninterrupted run
    assert done[0].user_attrs["step"] == ref.user_attrs["step"]
    folder = Path(done[0].user_attrs["run_dir"])
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "config.json", "eval.json", "metrics.jsonl"]
