"""Greedy decoding in batches, used by task evaluation.

Prompts are grouped by length so a batch needs no padding (and so no
attention mask): every row of a batch sees exactly what it would see alone.
The next-token head (head 1) decodes; the other heads are not used here (see
``lab.speculative`` for decoding that uses them).

Example:
    >>> import torch
    >>> from lab.config import ModelConfig
    >>> from lab.model import MTPModel
    >>> torch.manual_seed(0) and None
    >>> model = MTPModel(ModelConfig(size="custom", d_model=32, layers=2, n_heads=2, vocab_size=50).resolved())
    >>> outs = greedy_generate(model, [[1, 2, 3], [4, 5], [6, 7, 8]], max_new_tokens=4)
    >>> [len(o) for o in outs]
    [4, 4, 4]
"""

from __future__ import annotations

from collections import defaultdict

import torch

from lab.errors import UserError


def run_batched(prompts: list[list[int]], generate, *, stop_token: int | None = None,
                batch_size: int = 256, device: torch.device | str = "cpu") -> list[list[int]]:
    """Group prompts by length, call ``generate(x)`` per batch, cut each row after the stop token.

    ``generate`` maps a (B, T) prompt tensor to (B, new) tokens; this is the
    batching that plain greedy and self-speculative decoding share. Returns
    the new tokens of each prompt in the input order.

    Example:
        >>> echo = lambda x: x[:, -1:].repeat(1, 3)       # "decodes" the last token three times
        >>> run_batched([[1, 2], [3], [4, 5]], echo, stop_token=None)
        [[2, 2, 2], [3, 3, 3], [5, 5, 5]]
    """
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        if not p:
            raise UserError(f"prompt {i + 1} is empty")
        by_len[len(p)].append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for length in sorted(by_len):
        ids = by_len[length]
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            new = generate(torch.tensor([prompts[i] for i in chunk], dtype=torch.long, device=device))
            for row, i in enumerate(chunk):
                toks = new[row].tolist()
                if stop_token is not None and stop_token in toks:
                    toks = toks[:toks.index(stop_token) + 1]
                out[i] = toks
    return out


@torch.no_grad()
def greedy_generate(model, prompts: list[list[int]], max_new_tokens: int, *, stop_token: int | None = None,
                    batch_size: int = 256, device: torch.device | str | None = None) -> list[list[int]]:
    """Greedy continuation of each prompt with the next-token head (KV cache).

    Returns the new tokens of each prompt (in the input order), cut after
    ``stop_token`` (which is kept) or after ``max_new_tokens``.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return run_batched(prompts, lambda x: model.generate(x, max_new_tokens, stop_token=stop_token),
                           stop_token=stop_token, batch_size=batch_size, device=device)
    finally:
        model.train(was_training)
