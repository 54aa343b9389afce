"""One run on two processes (torchrun, gloo on the CPU) equals the one-process run, and resumes across process counts.

Two torchrun jobs in all (each ~3 Python processes), so the file stays fast:

- A: 2 processes, killed after step 3 (its checkpoint is at step 2);
- B: 2 processes resuming a 1-process run killed after step 3.

Against the uninterrupted 1-process run (and its own step-2 checkpoint), they
show: after k steps 2 processes have the weights of 1 process; 2 -> 1 and
1 -> 2 resumes end where the uninterrupted run ends; rank 0 alone writes.
The tolerance is that of fp32 sums taken in another order (the gradients of
the two halves of a micro-batch are added by the all-reduce instead of inside
one matmul), compounded over 4 AdamW steps.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from generators import registry
from lab import train as train_mod
from lab.cli import main
from lab.config import build_run_config

TINY = {
    "task.train_examples": 400, "task.test_per_op": 2, "task.valid_per_op": 1, "model.size": "custom",
    "model.d_model": 32, "model.layers": 3, "model.n_heads": 2, "model.n": 2, "train.steps": 4,
    "train.batch_tokens": 256, "train.context": 64, "train.micro_batch": 2, "train.eval_interval": 4,
    "train.checkpoint_interval": 2, "train.log_interval": 1, "train.progress": False, "train.warmup_steps": 2,
    "train.marginal_positions": 16, "train.device": "cpu",
}
FLAGS = ["--task", "polyarith"] + [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
# Measured (torch 2.13, CPU): any weight or AdamW moment differs by at most 2.4e-8 after 2 and 4 steps, a logged
# loss (~3.2 nats) by 1e-6, an eval metric by 2e-8. The bounds leave room for other BLAS builds.
ATOL = 1e-6  # weights and AdamW moments
LOSS_ATOL = 1e-5  # logged per-step losses and accuracies, eval metrics

# Run by torchrun in test A: the lab's CLI, stopped by an exception after step 3 on every rank.
CRASHING = """
import sys
sys.path.insert(0, {tests!r})
from test_distributed import crash_after_step_3
from lab.cli import main

crash_after_step_3()
raise SystemExit(main(sys.argv[1:]))
"""


def crash_after_step_3():
    """Make every training run raise RuntimeError("simulated crash") after step 3, as a kill would; returns the undo."""
    original = train_mod._Run.train_step

    def crashing(self, log=True):
        if self.step == 3:
            raise RuntimeError("simulated crash")
        return original(self, log)

    train_mod._Run.train_step = crashing
    return lambda: setattr(train_mod._Run, "train_step", original)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _torchrun(*args, cwd):
    """``torchrun --standalone --nproc_per_node 2 ARGS`` with this interpreter; returns the finished process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _ckpt(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 1-process run (uninterrupted), and a copy of it killed after step 3 (checkpoint at step 2)."""
    root = tmp_path_factory.mktemp("reference")
    cfg = build_run_config(registry.get("polyarith"), TINY)
    train_mod.run(cfg, root / "full", quiet=True)
    undo = crash_after_step_3()
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_mod.run(cfg, root / "crashed", quiet=True)
    finally:
        undo()
    return root


def test_two_processes_equal_one_and_resume_onto_one(reference, tmp_path):
    (tmp_path / "crash.py").write_text(CRASHING.format(tests=os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "two"
    job = _torchrun(str(tmp_path / "crash.py"), "train", *FLAGS, "--out", str(out), cwd=os.getcwd())
    assert job.returncode != 0 and "simulated crash" in job.stderr
    one, two = _ckpt(reference / "crashed"), _ckpt(out)
    assert two["step"] == one["step"] == 2 and two["position"] == one["position"] == 8
    # after 2 steps on 2 processes: the weights and AdamW moments of 1 process
    assert _max_diff(one["model"], two["model"]) < ATOL
    moments = [(s1[k], s2[k]) for s1, s2 in zip(one["optimizer"]["state"].values(), two["optimizer"]["state"].values())
               for k in ("exp_avg", "exp_avg_sq")]
    assert max((a - b).abs().max().item() for a, b in moments) < ATOL
    # rank 0 alone wrote: every logged step once, with the 1-process losses
    rows_one, rows_two = _rows(reference / "crashed"), _rows(out)
    assert [r["step"] for r in rows_two] == [1, 2, 3]
    for r1, r2 in zip(rows_one, rows_two):
        assert r2["tokens"] == r1["tokens"] and r2["loss"] == pytest.approx(r1["loss"], abs=LOSS_ATOL)
        assert r2["acc/head=2"] == pytest.approx(r1["acc/head=2"], abs=LOSS_ATOL)
    assert json.loads((out / "config.json").read_text())["meta"]["processes"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]

    # 2 -> 1: resumed on one process, it ends where the uninterrupted run ends
    summary = train_mod.resume(out, quiet=True)
    full = _ckpt(reference / "full")
    assert summary["step"] == 4 and _max_diff(full["model"], _ckpt(out)["model"]) < ATOL
    assert [r["step"] for r in _rows(out)] == [1, 2, 3, 4]


def test_one_process_run_resumes_onto_two(reference, tmp_path, capsys):
    run_dir = tmp_path / "crashed"
    shutil.copytree(reference / "crashed", run_dir)
    job = _torchrun("-m", "lab", "train", "--resume", str(run_dir), cwd=os.getcwd())
    assert job.returncode == 0, job.stderr[-2000:]
    assert job.stdout.count("final eval at step 4") == 1  # rank 0 alone reports
    full, resumed = _ckpt(reference / "full"), _ckpt(run_dir)
    assert resumed["step"] == 4 and _max_diff(full["model"], resumed["model"]) < ATOL
    assert [r["step"] for r in _rows(run_dir)] == [1, 2, 3, 4]
    # the final eval ran once, on rank 0, on (nearly) the same weights
    ev_full = json.loads((reference / "full" / "eval.json").read_text())
    ev = json.loads((run_dir / "eval.json").read_text())
    assert [h["step"] for h in ev["history"]] == [4]
    assert ev["metrics"].keys() == ev_full["metrics"].keys()
    for key, value in ev_full["metrics"].items():
        assert ev["metrics"][key] == pytest.approx(value, abs=LOSS_ATOL), key


TORCHRUN_ENV = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "29511"}


@pytest.mark.parametrize("env, sets, needle", [
    (TORCHRUN_ENV, ["--set", "train.batch_tokens=192"], "a global batch of 3 sequences"),
    (TORCHRUN_ENV, ["--set", "train.micro_batch=1"], "train.micro_batch 1 (sequences per forward/backward"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, [], "LOCAL_RANK, MASTER_ADDR, MASTER_PORT are missing"),
    ({**TORCHRUN_ENV, "RANK": "2"}, [], "RANK=2, LOCAL_RANK=0, WORLD_SIZE=2 do not fit together"),
])
def test_bad_multi_process_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, env, sets, needle):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["train", *FLAGS, *sets, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
