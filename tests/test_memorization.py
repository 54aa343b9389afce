"""The memorization check: held-out windows never trained on, and a gap that opens when a model memorizes."""

import json

import numpy as np

from generators import registry
from lab import train as train_mod
from lab.config import build_run_config
from lab.data import Windows


def test_heldout_windows_are_never_trained_on():
    tokens = np.arange(5000, dtype=np.uint32)  # token value = its position in the stream
    w = Windows(tokens, context=16, n=3, seed=7, heldout=20)
    held, _ = w.heldout_batch()
    assert held.shape == (20, 16 + 3)
    first_heldout = int(held.min())
    seen = set()
    for position in range(0, 3 * w.num_windows, 50):  # three epochs, every window many times
        batch, _ = w.batch(position, 50)
        seen.update(np.unique(batch).tolist())  # inputs and all n targets
        assert batch.max() < first_heldout
    assert len(seen) > 0.8 * first_heldout
    # the seen windows are the run's first windows: data positions 0..19
    assert np.array_equal(w.seen_batch()[0], w.batch(0, 20)[0])


def test_heldout_is_capped_at_a_tenth_and_can_be_off():
    tokens = np.arange(1000, dtype=np.uint16)
    assert Windows(tokens, 10, 1, 0, heldout=500).heldout == 9  # 99 windows -> at most 9
    off = Windows(tokens, 10, 1, 0, heldout=0)
    assert off.heldout == 0 and off.num_windows == 99


def _run(tmp_path, name, overrides):
    base = {
        "task.train_stories": 400, "task.test_stories": 3, "task.valid_stories": 3, "task.vocab_size": 400,
        "model.size": "custom", "model.d_model": 64, "model.layers": 2, "model.n_heads": 4,
        "train.batch_tokens": 1024, "train.context": 64, "train.lr": 3e-3, "train.warmup_steps": 5,
        "train.heldout_windows": 64, "train.progress": False, "train.log_interval": 50,
        "train.marginal_positions": 0,  # the marginalization baseline is not what this checks
    }
    cfg = build_run_config(registry.get("induction"), {**base, **overrides})
    train_mod.run(cfg, tmp_path / name, quiet=True)
    return json.loads((tmp_path / name / "eval.json").read_text())


def test_memorization_gap_opens_only_when_the_data_repeats(tmp_path):
    # A few hundred stories seen 10 times: the model memorizes them and the gap opens ...
    small = _run(tmp_path, "small", {"task.train_stories": 30, "train.steps": 120, "train.heldout_windows": 16})
    final = small["metrics"]
    assert small["history"][-1]["epoch"] > 10
    assert final["memorization_gap"] > 0.5, final
    assert final["loss/seen"] < final["loss/heldout"] - 0.5
    assert final["memorization_gap"] > 4 * final["memorization_gap_se"] > 0  # far beyond chance
    # ... while a single pass over 400 stories (each window seen at most once) keeps it near zero.
    single = _run(tmp_path, "single", {"train.steps": 40})
    assert single["history"][-1]["epoch"] < 1.0
    assert abs(single["metrics"]["memorization_gap"]) < 0.15, single["metrics"]
    # the gap is tracked at every eval, not only at the end
    assert all("memorization_gap" in h["metrics"] for h in single["history"])


def test_runs_saved_before_heldout_windows_keep_their_data_order():
    from lab.config import RunConfig

    cfg = build_run_config(registry.get("polyarith"), {"train.steps": 3})
    assert cfg.train.heldout_windows == 32
    old = cfg.to_dict()
    del old["train"]["heldout_windows"]  # a config.json written before the field existed
    assert RunConfig.from_dict(old, registry.get).train.heldout_windows == 0
    assert RunConfig.from_dict(cfg.to_dict(), registry.get) == cfg
