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


@torch.no_grad()
def greedy_generate(model, prompts: list[list[int]], max_new_tokens: int, *, stop_token: int | None = None,
                    batch_size: int = 256, device: torch.device | str | None = None) -> list[list[int]]:
    """Greedy continuation of each prompt with the next-token head.

    Returns the new tokens of each prompt (in the input order), cut after
    ``stop_token`` (which is kept) or after ``max_new_tokens``.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError("empty prompt")
        by_len[len(p)].append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for length in sorted(by_len):
        ids = by_len[length]
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            x = torch.tensor([prompts[i] for i in chunk], dtype=torch.long, device=device)
            new = model.generate(x, max_new_tokens, stop_token=stop_token)
            for row, i in enumerate(chunk):
                toks = new[row].tolist()
                if stop_token is not None and stop_token in toks:
                    toks = toks[:toks.index(stop_token) + 1]
                out[i] = toks
    model.train(was_training)
    return out
