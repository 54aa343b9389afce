"""Accelerator memory of a training step, and the lever for the largest sizes: activation checkpointing per block.

What one process holds while it trains (AdamW; weights kept in fp32, matmuls
in bf16 under autocast; README "Many GPUs" works the numbers for 1B)::

    weights fp32                      4 B / parameter
    gradients fp32                    4 B / parameter
    AdamW exp_avg + exp_avg_sq        8 B / parameter
    bf16 copies of the weights        2 B / parameter  (autocast casts each weight once and the
                                                        backward keeps the cast)
    activations                      40 d B / token / block kept (bf16 autocast; fp32: 72 d)
    one head's logits                14 V B / token    (bf16 logits, their fp32 copy, log-softmax, grad)

The 40 d is counted from the tensors autograd saves for one block under bf16
autocast (``tests/test_memory.py`` measures it): the fp32 residual entering
each of the two norms (2 x 4d), the bf16 inputs of the qkv, output and MLP-up
matmuls (3 x 2d), q, k, v and the attention output (4 x 2d), and the MLP's
4d-wide GELU input and output (2 x 8d): 38 d, plus small ones.

With ``train.activation_checkpointing`` a block keeps only its fp32 input
(4 d B / token) and recomputes the rest during the backward, one block at a
time: about a third more compute for a tenth of the activation memory.

The sequential backward (``lab.loss``) frees independent (parallel, linear)
heads one at a time, so their blocks count once; chained heads all count.

Example:
    >>> from lab.config import ModelConfig
    >>> est = estimate(ModelConfig(size="1B", vocab_size=2048).resolved(), tokens=8 * 2048)
    >>> round(est["params"] / 1e9, 2), round(est["total"] / 1e9, 1)
    (1.03, 55.2)
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint

from lab.model import Block, MTPModel

# Bytes per token, per unit of d_model, that one block's backward keeps (see the module docstring).
ACTIVATION_BYTES = {"bfloat16": 40, "float32": 72}
CHECKPOINTED_BYTES = 4  # a checkpointed block keeps its fp32 input only
LOGIT_BYTES = 14  # per token and vocabulary entry, for the one head whose loss is being computed


def estimate(model, tokens: int, *, dtype: str = "bfloat16", checkpointing: bool = False) -> dict[str, float]:
    """Bytes one process needs to train ``model`` (a resolved ModelConfig) on ``tokens`` tokens per micro-batch.

    ``tokens`` is this process's share: micro-batch sequences x context / processes.
    Returns each part and the ``total`` (no allocator slack or CUDA context included).

    Example:
        >>> from lab.config import ModelConfig
        >>> cfg = ModelConfig(size="10M", vocab_size=2048).resolved()
        >>> e = estimate(cfg, tokens=32 * 2048, checkpointing=True)
        >>> round(e["activations"] / estimate(cfg, tokens=32 * 2048)["activations"], 2)  # 6 blocks
        0.27
    """
    with torch.device("meta"):
        params = sum(p.numel() for p in MTPModel(model).parameters())
    per_param = {"weights": 4, "gradients": 4, "adamw": 8, "bf16_weights": 2 if dtype == "bfloat16" else 0}
    out = {name: b * params for name, b in per_param.items()}
    independent = model.head_kind in ("parallel", "linear")
    heads = 0 if model.head_kind == "linear" else 1 if independent else model.n
    blocks = model.trunk_layers + heads
    per_block = ACTIVATION_BYTES[dtype] * model.d_model * tokens
    if checkpointing:  # every block's input, plus one block's activations while it is recomputed
        out["activations"] = CHECKPOINTED_BYTES * model.d_model * tokens * blocks + per_block
    else:
        out["activations"] = per_block * blocks
    out["logits"] = LOGIT_BYTES * model.vocab_size * tokens
    out["params"] = params
    out["total"] = sum(v for k, v in out.items() if k != "params")
    return out


def _checkpointed(forward, x, rope, cache=None, *args, **kwargs):
    """A block's forward whose activations are recomputed in the backward (training only: no cache, grad on)."""
    if cache is not None or not torch.is_grad_enabled():
        return forward(x, rope, cache, *args, **kwargs)
    return checkpoint(forward, x, rope, None, *args, use_reentrant=False, **kwargs)


def checkpoint_blocks(model: torch.nn.Module) -> int:
    """Turn on activation checkpointing for every transformer block of ``model``; returns how many.

    The weights and their names do not change (checkpoints stay
    interchangeable); decoding with a KV cache and evaluation (no grad) run
    the plain forward.

    Example:
        >>> from lab.config import ModelConfig
        >>> model = MTPModel(ModelConfig(size="custom", d_model=32, layers=3, n_heads=2, n=2, vocab_size=50).resolved())
        >>> checkpoint_blocks(model)   # 3 layers: 1 trunk block + 2 head blocks
        3
    """
    count = 0
    for block in model.modules():
        if isinstance(block, Block):
            block.forward = functools.partial(_checkpointed, type(block).forward.__get__(block))
            count += 1
    return count
