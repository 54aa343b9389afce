"""Activation checkpointing changes memory, not gradients; the memory estimate's activation bytes are what autograd keeps."""

import pytest
import torch

from generators import registry
from lab.config import ModelConfig, build_run_config
from lab.loss import sequential_backward
from lab.memory import ACTIVATION_BYTES, CHECKPOINTED_BYTES, checkpoint_blocks
from lab.model import MTPModel
from lab.train import autocast_for


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(head_kind):
    torch.manual_seed(0)
    cfg = ModelConfig(size="custom", d_model=32, layers=4, n_heads=2, n=2, head_kind=head_kind, vocab_size=50)
    return MTPModel(cfg.resolved())


@pytest.mark.parametrize("head_kind", ["parallel", "causal", "sequential", "sequential_shared"])
def test_checkpointed_blocks_give_the_same_gradients(head_kind):
    window = torch.randint(0, 50, (3, 16 + 2), generator=torch.Generator().manual_seed(2))
    plain, ckpt = _model(head_kind), _model(head_kind)
    assert checkpoint_blocks(ckpt) == 4  # 2 trunk blocks + 2 head blocks
    a, b = sequential_backward(plain, window), sequential_backward(ckpt, window)
    assert [x.item() for x in a["loss"]] == [x.item() for x in b["loss"]]
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-7, msg=name)  # measured: equal


def _saved_bytes(block, x, rope, autocast):
    """Bytes of the activations autograd keeps for one block's backward (weights, their casts, the rotary table excluded)."""
    saved = {}
    shapes = {tuple(p.shape) for p in block.parameters()}

    def pack(t):
        if tuple(t.shape) not in shapes and tuple(reversed(t.shape)) not in shapes:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        block(x, rope)
    saved.pop(rope._table.untyped_storage().data_ptr(), None)  # shared by every block, (T, head_dim / 2)
    return sum(saved.values())


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_activation_bytes_per_block_are_what_autograd_keeps(dtype):
    model = _model("parallel")
    B, T, d = 4, 64, model.config.d_model
    x = torch.randn(B, T, d, requires_grad=True)
    autocast = autocast_for(torch.device("cpu"), dtype)
    measured = _saved_bytes(model.trunk[0], x, model.rope, autocast) / (B * T * d)
    assert measured == pytest.approx(ACTIVATION_BYTES[dtype], rel=0.1)  # measured 40.75 (bf16), 72.75 (fp32)
    checkpoint_blocks(model)
    kept = _saved_bytes(model.trunk[0], x, model.rope, autocast) / (B * T * d)
    assert kept <= CHECKPOINTED_BYTES  # the block's fp32 input: measured 4.0


def test_activation_checkpointing_is_a_config_field():
    cfg = build_run_config(registry.get("polyarith"), {"train.activation_checkpointing": "true"})
    assert cfg.train.activation_checkpointing is True
    assert build_run_config(registry.get("polyarith"), {}).train.activation_checkpointing is False
