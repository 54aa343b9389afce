"""Training runs: exact resume, determinism, the run folder, and bad input from the CLI."""

import json

import pytest
import torch

from lab import train as train_mod
from lab.cli import main
from lab.config import build_run_config

TINY = {
    "task.train_examples": 400, "task.test_per_op": 2, "model.size": "custom", "model.d_model": 32,
    "model.layers": 3, "model.n_heads": 2, "model.n": 2, "train.steps": 8, "train.batch_tokens": 256,
    "train.context": 64, "train.micro_batch": 2, "train.eval_interval": 4, "train.checkpoint_interval": 2,
    "train.log_interval": 1, "train.progress": False, "train.warmup_steps": 2,
}
TINY_FLAGS = ["--set", "task.train_examples=400", "--set", "task.test_per_op=2", "--size", "custom",
              "--set", "model.d_model=32", "--set", "model.layers=3", "--set", "model.n_heads=2",
              "--steps", "3", "--batch-tokens", "128", "--context", "64", "--no-progress"]


def _metrics_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("tokens_per_s")  # wall-clock dependent
    return rows


def test_resume_after_crash_reproduces_uninterrupted_run(tmp_path, monkeypatch):
    cfg = build_run_config("polyarith", TINY)
    full = train_mod.run(cfg, tmp_path / "full", quiet=True)

    # Crash after step 5: the last checkpoint is at step 4, metrics.jsonl already has step 5.
    original = train_mod._Run.train_step

    def crashing(self, log=True):
        if self.step == 5:
            raise RuntimeError("simulated crash")
        return original(self, log)

    monkeypatch.setattr(train_mod._Run, "train_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_mod.run(cfg, tmp_path / "crashed", quiet=True)
    assert torch.load(tmp_path / "crashed" / "checkpoint.pt", weights_only=False)["step"] == 4
    monkeypatch.setattr(train_mod._Run, "train_step", original)

    resumed = train_mod.run(None, tmp_path / "crashed", resume=True, quiet=True)
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
    cfg = build_run_config("polyarith", TINY)
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
        cfg = build_run_config("polyarith", {**TINY, "train.steps": 2, "train.seed": seed})
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
