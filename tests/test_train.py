"""Training runs: exact resume, determinism, the run folder, and bad input from the CLI."""

import json

import pytest
import torch

from generators import registry
from lab import train as train_mod
from lab.cli import main
from lab.config import build_run_config

TINY = {
    "task.train_examples": 400, "task.test_per_op": 2, "task.valid_per_op": 1, "model.size": "custom", "model.d_model": 32,
    "model.layers": 3, "model.n_heads": 2, "model.n": 2, "train.steps": 8, "train.batch_tokens": 256,
    "train.context": 64, "train.micro_batch": 2, "train.eval_interval": 4, "train.checkpoint_interval": 2,
    "train.log_interval": 1, "train.progress": False, "train.warmup_steps": 2,
}
TINY_FLAGS = ["--set", "task.train_examples=400", "--set", "task.test_per_op=2", "--set", "task.valid_per_op=1", "--size", "custom",
              "--set", "model.d_model=32", "--set", "model.layers=3", "--set", "model.n_heads=2",
              "--steps", "3", "--batch-tokens", "128", "--context", "64", "--no-progress"]


def _metrics_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("tokens_per_s")  # wall-clock dependent
    return rows


def test_resume_after_crash_reproduces_uninterrupted_run(tmp_path, crash_at):
    cfg = build_run_config(registry.get("polyarith"), TINY)
    full = train_mod.run(cfg, tmp_path / "full", quiet=True)

    # Crash after step 5: the last checkpoint is at step 4, metrics.jsonl already has step 5.
    disarm = crash_at(5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_mod.run(cfg, tmp_path / "crashed", quiet=True)
    assert torch.load(tmp_path / "crashed" / "checkpoint.pt", weights_only=False)["step"] == 4
    disarm()

    resumed = train_mod.resume(tmp_path / "crashed", quiet=True)
    assert resumed["step"] == full["step"] == 8
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "crashed" / "checkpoint.pt", weights_only=False)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["position"] == b["position"]
    assert _metrics_rows(tmp_path / "full") == _metrics_rows(tmp_path / "crashed")
    ea = json.loads((tmp_path / "full" / "eval.json").read_text())
    eb = json.loads((tmp_path / "crashed" / "eval.json").read_text())
    assert ea["metrics"] == eb["metrics"] and ea["best"] == eb["best"]
    assert [h["step"] for h in eb["history"]] == [4, 8]


def test_run_folder_contents(tmp_path):
    cfg = build_run_config(registry.get("polyarith"), TINY)
    summary = train_mod.run(cfg, tmp_path / "r", quiet=True)
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["model"]["n"] == 2 and stored["meta"]["params"] == summary["params"]
    assert "torch" in stored["meta"]["env"]
    rows = _metrics_rows(tmp_path / "r")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert {"loss/head=1", "loss/head=2", "acc/head=1", "acc/head=2", "lr", "tokens"} <= set(rows[0])
    assert rows[-1]["tokens"] == 8 * 4 * 64  # 4 sequences of 64 tokens per step
    ev = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert {f"accuracy/ops={m}" for m in range(1, 11)} <= set(ev["metrics"])
    assert ev["step"] == 8 and ev["best"]["step"] in (4, 8)
    # acceptance estimate for self-speculative decoding, recorded for n > 1
    assert 0.0 <= ev["metrics"]["agreement/head=2"] <= 1.0
    assert 1.0 <= ev["metrics"]["agreement/tokens_per_forward"] <= 2.0
    # lr schedule: warmup then cosine to 3% of peak
    assert rows[0]["lr"] == pytest.approx(0.5e-3) and rows[-1]["lr"] == pytest.approx(0.03e-3)
    # the loss goes down on this (memorisable) data
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_same_seed_same_weights_different_seed_differs(tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = build_run_config(registry.get("polyarith"), {**TINY, "train.steps": 2, "train.seed": seed})
        train_mod.run(cfg, tmp_path / name, quiet=True)
        runs[name] = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_cli_train_then_eval(tmp_path, capsys):
    assert main(["train", "--task", "polyarith", "--n", "2", "--out", str(tmp_path / "x"), *TINY_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "accuracy/in_domain" in out and "final eval at step 3" in out
    assert main(["eval", str(tmp_path / "x")]) == 0
    assert "accuracy/ops=10" in capsys.readouterr().out
    # resume of a finished run only summarises it
    assert main(["train", "--resume", str(tmp_path / "x")]) == 0


def _one_line_error(capsys, argv, needle):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    return err


@pytest.mark.parametrize("argv,needle", [
    (["train", "--task", "nope", "--out", "{out}"], "unknown task 'nope'"),
    (["train", "--size", "2M", "--out", "{out}"], "unknown size '2M'"),
    (["train", "--n", "0", "--out", "{out}"], "n (number of predicted tokens) must be >= 1"),
    (["train", "--size", "1M", "--n", "5", "--out", "{out}"], "leaves no trunk layer"),
    (["train", "--size", "3M", "--n", "4", "--out", "{out}"], "leaves no trunk layer"),
    (["train", "--head-kind", "diagonal", "--out", "{out}"], "unknown head kind 'diagonal'"),
    (["train", "--tokens", "0", "--out", "{out}"], "budget must be positive"),
    (["train", "--steps", "-3", "--out", "{out}"], "budget must be positive"),
    (["train", "--lr", "fast", "--out", "{out}"], "train.lr: expected float"),
    (["train", "--set", "model.nheads=3", "--out", "{out}"], "unknown config key 'model.nheads'"),
    (["train", "--set", "lr=3", "--out", "{out}"], "bad config key 'lr'"),
    (["train", "--loss-weights", "1,1,1", "--n", "2", "--out", "{out}"], "loss_weights has 3 entries"),
    (["train", "--set", "train.heldout_windows=-1", "--out", "{out}"], "heldout_windows must be >= 0"),
    (["train", "--device", "cuda", "--out", "{out}"], "CUDA is not available"),
    (["train", "--bogus-flag"], "unrecognized arguments"),
    (["train"], "train needs --out"),
    # values the config must refuse (one place: TrainConfig.validate / ModelConfig.resolved)
    (["train", "--lr", "nan", "--out", "{out}"], "train.lr must be a positive number, got nan"),
    (["train", "--lr", "inf", "--out", "{out}"], "train.lr must be a positive number"),
    (["train", "--set", "train.beta1=2", "--out", "{out}"], "train.beta1 must be in [0, 1)"),
    (["train", "--set", "train.beta2=1", "--out", "{out}"], "train.beta2 must be in [0, 1)"),
    (["train", "--set", "train.grad_clip=-1", "--out", "{out}"], "train.grad_clip must be positive"),
    (["train", "--set", "train.grad_clip=0", "--out", "{out}"], "train.grad_clip must be positive"),
    (["train", "--set", "train.min_lr_ratio=-5", "--out", "{out}"], "train.min_lr_ratio must be in [0, 1]"),
    (["train", "--set", "train.weight_decay=-1", "--out", "{out}"], "train.weight_decay must be >= 0"),
    (["train", "--warmup-steps", "-5", "--out", "{out}"], "train.warmup_steps must be >= 0, or -1"),
    (["train", "--set", "train.threads=-3", "--out", "{out}"], "train.threads must be >= 0"),
    (["train", "--set", "train.checkpoint_interval=-1", "--out", "{out}"], "train.checkpoint_interval must be >= 0"),
    (["train", "--set", "model.mlp_ratio=0", "--out", "{out}"], "model.mlp_ratio must be at least 1"),
    (["train", "--set", "model.rope_base=0", "--out", "{out}"], "model.rope_base must be a positive number"),
    (["train", "--seed", "-1", "--out", "{out}"], "train.seed must be in 0 .. 2**63-1, got -1"),
    (["train", "--data-seed", "-1", "--out", "{out}"], "train.data_seed must be in 0 .. 2**63-1"),
    (["train", "--tokens", "1e30", "--out", "{out}"], "beyond the 1e+13 this lab accepts"),
    (["train", "--steps", "1e30", "--out", "{out}"], "beyond the 1e+13 this lab accepts"),
    (["train", "--tokens", "inf", "--out", "{out}"], "train.tokens: expected int"),
    (["train", "--steps", "0", "--tokens", "0", "--out", "{out}"], "steps=0 means: from tokens"),
    (["train", "--loss-weights", "nan", "--out", "{out}"], "loss_weights must be finite"),
    (["train", "--size", "custom", "--set", "model.d_model=32", "--set", "model.layers=2", "--set", "model.n_heads=0",
      "--out", "{out}"], "all positive (got 32, 2, 0; 0 means 'from the size preset'"),
    (["train", "--size", "custom", "--set", "model.d_model=32", "--set", "model.layers=0", "--set", "model.n_heads=2",
      "--out", "{out}"], "all positive (got 32, 0, 2"),
    # flags a resume would ignore
    (["train", "--resume", "{out}", "--lr", "3e-4", "--set", "train.seed=1"], "--lr, --set train.seed=1 would be ignored"),
    (["train", "--resume", "{out}", "--task", "polyarith"], "--task would be ignored"),
])
def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    _one_line_error(capsys, [a.replace("{out}", str(out)) for a in argv], needle)
    assert not out.exists()


def test_out_pointing_at_existing_run_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["train", "--out", str(out), *TINY_FLAGS]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _one_line_error(capsys, ["train", "--out", str(out), *TINY_FLAGS], "already holds a run")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_missing_and_corrupt_checkpoints(tmp_path, capsys):
    _one_line_error(capsys, ["eval", str(tmp_path / "none")], "is not a run folder")
    out = tmp_path / "x"
    assert main(["train", "--out", str(out), *TINY_FLAGS]) == 0
    ckpt = out / "checkpoint.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 3])  # torn file
    _one_line_error(capsys, ["eval", str(out)], "corrupt or unreadable")
    _one_line_error(capsys, ["train", "--resume", str(out)], "corrupt or unreadable")
    ckpt.unlink()
    _one_line_error(capsys, ["eval", str(out)], "no checkpoint")
    (out / "config.json").write_text("{not json")
    _one_line_error(capsys, ["eval", str(out)], "is corrupt")


def test_chunked_dataset_build_equals_one_chunk(tmp_path, monkeypatch):
    import numpy as np

    from generators import registry
    from lab import data

    def build(root):
        task = registry.create("polyarith", {"train_examples": 500, "test_per_op": 2})  # masked: answer-only loss
        return data.prepare(task, 0, root=root, quiet=True)

    whole = build(tmp_path / "whole")
    monkeypatch.setattr(data, "BUILD_CHUNK", 37)  # 14 chunks, boundaries mid-stream
    chunked = build(tmp_path / "chunked")
    assert np.array_equal(whole.train_tokens, chunked.train_tokens)
    assert np.array_equal(whole.train_mask, chunked.train_mask)
    assert whole.meta["target_tokens"] == chunked.meta["target_tokens"] == int(chunked.train_mask.sum())


# ---------------- faults: crashes, divergence, honest rates ----------------

FAST = {**TINY, "task.valid_per_op": 1}  # a validation set of 10 (the default 1000 dominates a tiny run)

def test_resume_before_the_first_checkpoint_logs_every_step_once(tmp_path, crash_at):
    cfg = build_run_config(registry.get("polyarith"), {**FAST, "train.checkpoint_interval": 0})  # first checkpoint at step 4
    full = tmp_path / "full"
    train_mod.run(cfg, full, quiet=True)
    disarm = crash_at(3)  # killed after logging steps 1-3, before any checkpoint
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_mod.run(cfg, tmp_path / "crashed", quiet=True)
    assert not (tmp_path / "crashed" / "checkpoint.pt").exists()
    with open(tmp_path / "crashed" / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "tok')  # and the crash tore a line
    disarm()
    assert main(["train", "--resume", str(tmp_path / "crashed")]) == 0
    assert _metrics_rows(tmp_path / "crashed") == _metrics_rows(full)  # steps 1..8, once each, in order


def test_resume_drops_a_metrics_line_torn_by_the_crash(tmp_path, crash_at):
    cfg = build_run_config(registry.get("polyarith"), {**FAST, "train.eval_interval": 100})
    disarm = crash_at(5)  # checkpoint at step 4, steps 1-5 logged
    with pytest.raises(RuntimeError):
        train_mod.run(cfg, tmp_path / "r", quiet=True)
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')
    disarm()
    train_mod.resume(tmp_path / "r", quiet=True)
    assert [r["step"] for r in _metrics_rows(tmp_path / "r")] == list(range(1, 9))


def _poison_from(monkeypatch, call):
    """Gradients become NaN from the call-th micro-batch backward on (a diverging run, made on purpose)."""
    original = train_mod.sequential_backward
    calls = [0]

    def poisoned(model, *args, **kwargs):
        out = original(model, *args, **kwargs)
        calls[0] += 1
        if calls[0] >= call:
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
        return out

    monkeypatch.setattr(train_mod, "sequential_backward", poisoned)


def test_a_diverging_run_stops_with_one_line_and_keeps_its_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "x"
    # 2 micro-batches a step: step 5 is the first with NaN gradients. The log comes every 10 steps, so the
    # NaN is found at the step-6 checkpoint, which must not be written; the message names step 5.
    _poison_from(monkeypatch, 9)
    flags = [a for a in TINY_FLAGS if a not in ("--steps", "3")]
    argv = ["train", "--out", str(out), *flags, "--set", "task.valid_per_op=1", "--steps", "8", "--micro-batch", "1", "--set", "train.log_interval=10",
            "--set", "train.checkpoint_interval=2", "--eval-interval", "100"]
    err = _one_line_error(capsys, argv, "training diverged at step 5")
    assert "checkpoint of step 4 is kept" in err
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (out / "metrics.jsonl").exists() and not (out / "eval.json").exists()


def test_an_eval_between_log_steps_does_not_inflate_tokens_per_s(tmp_path, monkeypatch):
    import types

    clock = [1000.0]
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(time=lambda: clock[0]))
    step, evaluate = train_mod._Run.train_step, train_mod._Run.evaluate

    def one_second_step(self, log=True):
        clock[0] += 1.0
        return step(self, log)

    def slow_eval(self, final):
        clock[0] += 50.0
        return evaluate(self, final)

    monkeypatch.setattr(train_mod._Run, "train_step", one_second_step)
    monkeypatch.setattr(train_mod._Run, "evaluate", slow_eval)
    cfg = build_run_config(registry.get("polyarith"), {**FAST, "train.log_interval": 4, "train.eval_interval": 2})
    train_mod.run(cfg, tmp_path / "r", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8]
    assert [r["tokens_per_s"] for r in rows] == [4 * 64.0, 4 * 64.0]  # 4 windows of 64 tokens a second


@pytest.mark.parametrize("where,needle", [
    ("/proc/mtplab-run", "cannot write in /proc"),
    ("{file}/sub", "is a file, not a folder"),
    ("{file}", "exists and is a file; give a folder"),
])
def test_train_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch, capsys, where, needle):
    monkeypatch.setenv("MTPLAB_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, ["train", "--out", where.format(file=tmp_path / "file"), *TINY_FLAGS], needle)
    assert not (tmp_path / "cache").exists()  # no dataset was built
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "x"


FAST_FLAGS = [*TINY_FLAGS, "--set", "task.valid_per_op=1"]


def test_eval_is_the_final_eval_and_leaves_eval_json_alone(tmp_path, capsys):
    run = tmp_path / "x"
    assert main(["train", "--n", "2", "--out", str(run), *FAST_FLAGS]) == 0
    final = json.loads((run / "eval.json").read_text())["metrics"]
    before = (run / "eval.json").read_bytes()
    assert {"loss/heldout", "memorization_gap", "agreement/head=2", "valid/accuracy/in_domain"} <= set(final)
    capsys.readouterr()
    assert main(["eval", str(run), "--json", str(tmp_path / "again.json")]) == 0
    assert "eval.json is not changed" in capsys.readouterr().out
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["step"] == 3 and again["metrics"] == pytest.approx(final)
    # the marginalization baseline is the final eval's alone, even when intermediate evals score every example
    history = json.loads((run / "eval.json").read_text())["history"]
    assert len(history) > 1 and all((not h["final"]) == ("future_acc/k=2/marginal" not in h["metrics"]) for h in history)
    assert (run / "eval.json").read_bytes() == before
    # its outputs are checked before the evaluation runs
    (tmp_path / "file").write_text("x")
    for argv, needle in ((["--limit", "-1"], "--limit must be >= 0"), (["--json", str(tmp_path)], "is a folder"),
                         (["--json", "/proc/mtplab.json"], "cannot write in /proc"),
                         (["--json", str(tmp_path / "file" / "e.json")], "is a file, not a folder"),
                         (["--json", str(tmp_path / "missing" / "e.json")], "does not exist"),
                         (["--json", str(run / "eval.json")], "the run's own eval.json")):
        _one_line_error(capsys, ["eval", str(run), *argv], needle)
    assert not list(tmp_path.glob(".*tmp*")) and not list(tmp_path.glob(".mtplab-probe*"))


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    flags = [a for a in FAST_FLAGS if a != "--no-progress"]
    assert main(["train", "--out", str(tmp_path / "x"), *flags]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "train: step 1/3 (33%)" in err and "train: step 3/3 (100%) loss=" in err, err


def test_a_damaged_dataset_cache_is_one_line_and_rebuild_fixes_it(tmp_path, monkeypatch, capsys):
    import numpy as np

    monkeypatch.setenv("MTPLAB_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["generate", "polyarith", "--split", "test", "--set", "task.train_examples=400",
                 "--set", "task.test_per_op=2", "--set", "task.valid_per_op=1", "--out", str(tmp_path / "t.jsonl")]) == 0
    (entry,) = (tmp_path / "cache").iterdir()
    meta = json.loads((entry / "meta.json").read_text())
    tokens = np.fromfile(entry / "train.bin", dtype=meta["dtype"])
    tokens[:-7].tofile(entry / "train.bin")  # a stream cut short (an even number of bytes: it still memory-maps)
    capsys.readouterr()
    err = _one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), *FAST_FLAGS], "train.bin has")
    assert "--rebuild" in err and not (tmp_path / "run").exists()
    assert main(["train", "--out", str(tmp_path / "run"), *FAST_FLAGS, "--rebuild"]) == 0
    assert np.array_equal(np.fromfile(entry / "train.bin", dtype=meta["dtype"]), tokens)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [entry.name]  # swapped in, nothing left over


TASK_SOURCE = """
import dataclasses
from generators.registry import Task

@dataclasses.dataclass(frozen=True)
class Config:
    examples: int = 50

class Echo(Task):
    name, Config, objective = "codehash-echo", Config, "accuracy"

    def build(self, split, seed):
        return [{"text": f"item {i} of {split}"} for i in range(self.config.examples)]

    def document(self, record):
        return record["text"]{suffix}
"""


def test_editing_a_task_s_code_builds_a_fresh_dataset(tmp_path, monkeypatch):
    import importlib.util
    import sys

    from lab.data import prepare

    def load(suffix):
        path = tmp_path / "echo_task.py"
        path.write_text(TASK_SOURCE.replace("{suffix}", suffix))
        spec = importlib.util.spec_from_file_location("echo_task", path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "echo_task", module)
        spec.loader.exec_module(module)
        return prepare(module.Echo(module.Config()), 0, root=tmp_path / "cache", quiet=True)

    old = load("")
    new = load(".upper()")  # document() changed: the cached tokens of the old code must not be used
    assert new.path != old.path
    assert bytes(new.train_tokens[1:5].astype("uint8")) == b"ITEM" and bytes(old.train_tokens[1:5].astype("uint8")) == b"item"
