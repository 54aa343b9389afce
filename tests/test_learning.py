"""One real learning run: a tiny model learns polyarith negation (k=4) in a fixed number of steps.

Not a speed test (no clock): it fails if the pipeline stops learning, e.g. a
loss mask off by one, a broken attention mask or a data stream that does not
match its targets. Chance is 7^-4 for a 4-digit answer over F7.
"""

import json

from generators import registry
from lab.config import build_run_config
from lab.train import run

SETTINGS = {
    "task.ops": "neg", "task.k": 4, "task.train_min_ops": 1, "task.train_max_ops": 1, "task.test_min_ops": 1,
    "task.test_max_ops": 1, "task.train_examples": 4000, "task.test_per_op": 100, "task.valid_per_op": 100,
    "model.size": "custom", "model.d_model": 64, "model.layers": 2, "model.n_heads": 4, "model.rope_base": 100.0,
    "train.steps": 200, "train.batch_tokens": 512, "train.context": 64, "train.lr": 3e-3,
    "train.document_mask": True, "train.eval_interval": 200, "train.progress": False, "train.threads": 1,
}


def test_tiny_model_learns_negation(tmp_path):
    run(build_run_config(registry.get("polyarith"), SETTINGS), tmp_path / "run", quiet=True)
    final = json.loads((tmp_path / "run" / "eval.json").read_text())["metrics"]
    assert final["accuracy/ops=1"] >= 0.9, final  # chance: 0.04%
    assert final["valid/accuracy/ops=1"] >= 0.9, final
    # the final eval's marginalization baseline (exact over the 257-token vocabulary): a model that knows each
    # answer digit also knows the one after next by summing over the digit between
    assert final["future_acc/k=2/marginal"] >= 0.9 and final["future_acc/k=2/marginal_mass"] == 1.0, final
    assert "future_acc/k=2/head" not in final  # n = 1: no second head to compare
