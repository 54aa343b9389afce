"""The CUDA code paths, run on the CPU so that they cannot rot unseen: bf16 autocast, compiled blocks, fused AdamW.

Each trains the same tiny model for a few steps through the lab's own pieces
(``autocast_for``, ``compile_blocks``, ``build_optimizer``, the sequential
backward) and is compared with the plain fp32 path. Tolerances (measured
values in the comments; torch 2.13, CPU):

- fused AdamW: weights within 1e-6 after 5 steps (the same arithmetic in one kernel);
- compiled blocks: losses within 1e-5 and weights within 1e-5 after 3 steps (same ops, other fusion);
- bf16 autocast: losses within 2% relative, gradients at cosine >= 0.99 (bf16 has 8 mantissa bits).
"""

import pytest
import torch
import torch.nn.functional as F

from lab.config import ModelConfig, TrainConfig
from lab.loss import sequential_backward
from lab.model import MTPModel
from lab.train import autocast_for, build_optimizer, compile_blocks

CPU = torch.device("cpu")
CFG = ModelConfig(size="custom", d_model=32, layers=3, n_heads=2, n=2, vocab_size=50).resolved()
TRAIN = TrainConfig(lr=3e-3, weight_decay=0.1)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model():
    torch.manual_seed(0)
    return MTPModel(CFG)


def _windows(steps):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, CFG.vocab_size, (4, 24 + CFG.n), generator=g) for _ in range(steps)]


def _train(model, steps, *, fused=False, dtype="float32"):
    """``steps`` AdamW steps of the lab's training step; returns the per-step summed losses."""
    opt = build_optimizer(model, TRAIN, CPU, fused=fused)
    losses = []
    for window in _windows(steps):
        stats = sequential_backward(model, window, autocast=autocast_for(CPU, dtype))
        torch.nn.utils.clip_grad_norm_(model.parameters(), TRAIN.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(sum(stats["loss"]).item())
    return losses


def _max_diff(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def test_fused_adamw_matches_the_plain_one():
    plain, fused = _model(), _model()
    _train(plain, 5)
    _train(fused, 5, fused=True)
    assert build_optimizer(fused, TRAIN, CPU, fused=True).defaults["fused"]
    assert _max_diff(plain, fused) < 1e-6  # measured 1.5e-8


def test_compiled_blocks_match_eager():
    eager, compiled = _model(), _model()
    assert compile_blocks(compiled, backend="aot_eager") == 3  # 1 trunk block + 2 head blocks
    a, b = _train(eager, 3), _train(compiled, 3)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5  # measured 0 to 5e-7
    assert _max_diff(eager, compiled) < 1e-5


def test_bf16_autocast_matches_fp32():
    window = _windows(1)[0]
    grads = {}
    for dtype in ("float32", "bfloat16"):
        model = _model()
        stats = sequential_backward(model, window, autocast=autocast_for(CPU, dtype))
        grads[dtype] = (torch.tensor([s.item() for s in stats["loss"]]),
                        torch.cat([p.grad.flatten() for p in model.parameters()]))
    (loss32, g32), (loss16, g16) = grads["float32"], grads["bfloat16"]
    assert torch.allclose(loss16, loss32, rtol=2e-2)  # measured 1e-3 relative
    assert F.cosine_similarity(g16, g32, dim=0) >= 0.99  # measured 0.9998
    # and a few steps of training stay close
    a, b = _train(_model(), 3), _train(_model(), 3, dtype="bfloat16")
    assert max(abs(x - y) / x for x, y in zip(a, b)) < 2e-2
