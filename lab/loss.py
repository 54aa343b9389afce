"""The multi-token loss and its memory-efficient backward (paper Fig. 2).

Loss = sum_i w_i * CE(head_i logits at t, x[t+i]) over heads i = 1..n (equal
weights in the paper; the sum, not the mean, as in the paper). Logits are
(B, T, V) per head, and at a large vocabulary they dominate activation memory;
the naive loss keeps all n of them alive until ``backward()``. The sequential
backward keeps one at a time:

    h = trunk(x)                                  forward once, graph kept
    for each head i:                              (parallel / linear heads)
        z_i    = head_i(h_leaf)                   h_leaf = h.detach(), requires grad
        loss_i = w_i * CE(lm_head(norm(z_i)), x[t+i])
        loss_i.backward()                         grad -> head_i, lm_head, h_leaf.grad (accumulates)
                                                  logits_i and head_i's activations freed here
    h.backward(h_leaf.grad)                       trunk backward once

Heads that read each other (causal, anticausal, sequential) cannot be freed one
by one, so for them only the logits are: all z_i are computed with their
graph, each head's loss is backpropagated to a detached copy of z_i, and one
``torch.autograd.backward(zs, grads)`` then runs through the head layers and
the trunk. With parameter matching the head layers replace trunk layers, so
the layers kept in memory are as many as for n=1 either way.

Both give gradients equal to ``naive_backward`` (tests/test_loss.py checks it
for every head kind, and with weighted hidden states, where the trunk output h
is all the trunk's hidden states stacked, (L+1, B, T, d): still one tensor,
detached and backpropagated as above, each head mixing it in ``head_state``).

Example:
    >>> import torch
    >>> from lab.config import ModelConfig
    >>> from lab.model import MTPModel
    >>> model = MTPModel(ModelConfig(size="custom", d_model=32, layers=3, n_heads=2, n=2, vocab_size=50).resolved())
    >>> window = torch.randint(0, 50, (4, 10 + 2))   # (B, T + n): inputs and the n shifted targets
    >>> stats = sequential_backward(model, window)
    >>> sorted(stats)[:2], len(stats["loss"])
    (['acc', 'loss'], 2)
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from lab.model import document_mask


IGNORE = -100  # target value of a token that is context only (see Task.context)


def _split(model, window, mask=None):
    """window (B, T + n) -> inputs (B, T) and the n target tensors (B, T).

    Where ``mask`` (B, T + n, bool) is False the target is IGNORE: no loss there.
    """
    n = model.config.n
    T = window.shape[1] - n
    if T < 1:
        raise ValueError(f"window of {window.shape[1]} tokens is too short for n={n}")
    targets = [window[:, i + 1:i + 1 + T] for i in range(n)]
    if mask is not None:
        targets = [t.masked_fill(~mask[:, i + 1:i + 1 + T], IGNORE) for i, t in enumerate(targets)]
    return window[:, :T], targets


def _head_loss(model, z, target, weight, scale, stats, count=None):
    """Weighted CE of one head from its hidden state; records loss (and top-1 accuracy if tracked).

    The summed CE is divided by ``count`` (default: the scored targets here, clamped to >= 1).
    """
    logits = model.logits(z)  # (B, T, V)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the softmax in fp32 under autocast
    scored = target != IGNORE
    # mean over the scored targets (all of them unless the task masks context); 0 if none
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE, reduction="sum")
    count = scored.sum().clamp(min=1) if count is None else max(count, 1)
    ce = ce / count
    with torch.no_grad():
        stats["loss"].append(ce.detach())
        if "acc" in stats:  # an argmax over (B, T, V): only on steps that log it
            hits = ((logits.argmax(-1) == target) & scored).sum()
            stats["acc"].append(hits / count)
    return ce * (weight * scale)


def sequential_backward(model, window, mask=None, *, scale: float = 1.0, autocast=contextlib.nullcontext,
                        track_accuracy: bool = True, eot: int | None = None, weights=None, counts=None) -> dict:
    """Memory-efficient MTP forward + backward on one micro-batch.

    ``window`` is (B, T + n) tokens; head i is trained on window[:, i : T + i],
    except where the optional ``mask`` (B, T + n, bool) is False.
    ``scale`` multiplies the loss (1 / accumulation steps). Gradients land in
    ``.grad``; returns per-head unweighted losses and (if ``track_accuracy``)
    top-1 accuracies as lists of 0-dim tensors (not synced to the host, so no
    stall on GPU). With ``eot`` (the end-of-text token id) attention stays
    within each packed document (``lab.model.document_mask``). ``weights``
    (one per head) replaces ``model.config.weights`` (a schedule moves them).
    A trunk whose parameters all are fixed is not backpropagated through.
    ``counts`` (one per head) replaces the number of scored targets each
    head's summed loss is divided by: a data-parallel rank holding part of a
    micro-batch passes the whole micro-batch's (``lab.distributed``), so the
    ranks' losses and gradients add up to those of the whole micro-batch.
    """
    if model.config.n == 1:  # one head: nothing to free between heads, one backward is cheaper
        return naive_backward(model, window, mask, scale=scale, autocast=autocast, track_accuracy=track_accuracy,
                              eot=eot, weights=weights, counts=counts)
    weights = model.config.weights if weights is None else weights
    counts = [None] * model.config.n if counts is None else counts
    idx, targets = _split(model, window, mask)
    attn = document_mask(idx, eot) if eot is not None else None
    stats = {"loss": [], "acc": []} if track_accuracy else {"loss": []}
    with autocast():
        h = model.trunk_forward(idx, attn_mask=attn)
    if model.heads_independent:
        h_leaf = h.detach().requires_grad_()
        for i, target in enumerate(targets):
            with autocast():
                loss = _head_loss(model, model.head_state(i, h_leaf, attn_mask=attn), target, weights[i], scale, stats,
                                  counts[i])
            loss.backward()  # frees head i's logits and activations
        if h.requires_grad:  # not when the trunk is fixed (train.freeze, a head warmup): the backward ends at h
            h.backward(h_leaf.grad)
        return stats
    with autocast():
        zs = model.head_states(h, window, attn_mask=attn)
    grads = []
    for i, target in enumerate(targets):
        z_leaf = zs[i].detach().requires_grad_()
        with autocast():
            loss = _head_loss(model, z_leaf, target, weights[i], scale, stats, counts[i])
        loss.backward()  # frees head i's logits
        grads.append(z_leaf.grad)
    torch.autograd.backward(zs, grads)
    return stats


def naive_backward(model, window, mask=None, *, scale: float = 1.0, autocast=contextlib.nullcontext,
                   track_accuracy: bool = True, eot: int | None = None, weights=None, counts=None) -> dict:
    """The reference: sum the n weighted losses, one backward. Keeps all logits alive."""
    weights = model.config.weights if weights is None else weights
    counts = [None] * model.config.n if counts is None else counts
    idx, targets = _split(model, window, mask)
    attn = document_mask(idx, eot) if eot is not None else None
    stats = {"loss": [], "acc": []} if track_accuracy else {"loss": []}
    with autocast():
        h = model.trunk_forward(idx, attn_mask=attn)
        zs = model.head_states(h, window, attn_mask=attn)
        total = sum(_head_loss(model, z, t, w, scale, stats, c) for z, t, w, c in zip(zs, targets, weights, counts))
    total.backward()
    return stats


@torch.no_grad()
def next_token_nll(model, window, mask=None, *, autocast=contextlib.nullcontext,
                   eot: int | None = None) -> tuple[list[float], list[int]]:
    """Per window (row): summed next-token cross-entropy (nats) over its scored targets, and their count.

    Head 1 only, no gradient: the held-out and seen-data losses of
    ``lab.train`` (the memorization check) are built from it.

    Example:
        >>> import torch
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> model = MTPModel(ModelConfig(size="custom", d_model=32, layers=3, n_heads=2, n=2, vocab_size=50).resolved())
        >>> sums, counts = next_token_nll(model, torch.randint(0, 50, (3, 10 + 2)))
        >>> counts, 2.5 < sum(sums) / sum(counts) < 5.5      # 10 targets a row; about ln(50) = 3.9 at init
        ([10, 10, 10], True)
    """
    idx, targets = _split(model, window, mask)
    attn = document_mask(idx, eot) if eot is not None else None
    with autocast():
        h = model.trunk_forward(idx, attn_mask=attn)
        logits = model.logits(model.head_states(h, window, upto=1, attn_mask=attn)[0])
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets[0], ignore_index=IGNORE, reduction="none")  # (B, T)
    return ce.sum(1).tolist(), (targets[0] != IGNORE).sum(1).tolist()
