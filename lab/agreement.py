"""Teacher-forced head agreement: a cheap estimate of self-speculative acceptance, for ``eval.json``.

Every evaluation of a run with n > 1 heads records ``agreement/head=k`` and
``agreement/tokens_per_forward`` (:func:`head_agreement`) on the task's test
documents packed like training data (:func:`agreement_windows`). One forward
pass per window, no decoding: the estimate of what ``lab.speculative``
measures by decoding (``mtplab bench decode``).
"""

from __future__ import annotations

import torch

from lab.decode import length_batches, pick


def agreement_windows(task, records: list[dict], enc, context: int, *, max_tokens: int = 16384) -> torch.Tensor:
    """Test documents packed like training data (end-of-text + document, back to back), cut into windows.

    Returns a LongTensor (windows, context) of at most ``max_tokens`` tokens
    (at least one window, shorter than ``context`` if the documents are); if
    the records hold more, documents are taken evenly spread over them.

    Example:
        >>> from generators import registry
        >>> from lab.tokenizers import byte_encoding
        >>> task = registry.create("polyarith", {"test_per_op": 2})
        >>> w = agreement_windows(task, task.build("test", 0), byte_encoding(), 64)
        >>> w.shape[1], int(w[0, 0]) == byte_encoding().eot_token
        (64, True)
    """
    docs = [[enc.eot_token] + enc.encode_ordinary(task.document(rec)) for rec in records]
    total = sum(map(len, docs))
    if total > max_tokens:  # documents spread evenly over the records (test sets are often sorted by difficulty)
        docs = pick(docs, max(1, len(docs) * max_tokens // total))
    stream = [t for doc in docs for t in doc][:max_tokens]
    if len(stream) < context:
        return torch.tensor([stream], dtype=torch.long)
    rows = len(stream) // context
    return torch.tensor(stream[:rows * context], dtype=torch.long).view(rows, context)


@torch.no_grad()
def head_agreement(model, windows, device=None, *, batch_size: int = 16) -> dict[str, float]:
    """Per-head teacher-forced top-1 agreement with head 1's greedy continuation.

    Definition. On a teacher-forced window x[0..T-1] (true tokens), for head
    k >= 2 and every position t with t + k - 1 <= T - 1::

        agreement/head=k = mean_t [ argmax head_k(x[0..t])[t]  ==  argmax head_1(x[0..t+k-1])[t+k-1] ]

    Head k at t drafts token t+k; in speculative decoding that draft is
    verified by head 1 at position t+k-1. Here head 1 reads the TRUE prefix
    instead of the greedy one (that is what makes it one forward pass and
    cheap), so this estimates the (unconditional) acceptance of head k's
    draft; it equals it where the true prefix is the greedy one. Sequential
    heads read the true tokens x[t+1..t+k-1] (teacher forcing), as in
    training. Also reported: ``agreement/tokens_per_forward`` = 1 + mean over
    positions t <= T-n of the number of leading heads 2, 3, ... that agree at
    t: the same estimate for blockwise decoding with all n heads (the
    accepted drafts plus the bonus token; 1.0 means no speed-up).

    ``windows``: a LongTensor (N, T) or a list of token lists (e.g.
    :func:`agreement_windows`). Returns {} for a model with one head.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> sorted(head_agreement(m, torch.randint(0, 20, (3, 10))))
        ['agreement/head=2', 'agreement/tokens_per_forward']
    """
    n = model.config.n
    if n < 2:
        return {}
    device = device or next(model.parameters()).device
    seqs = windows.tolist() if isinstance(windows, torch.Tensor) else [list(w) for w in windows]
    hits = [0] * (n + 1)
    count = [0] * (n + 1)
    run_sum, run_count = 0, 0
    was_training = model.training
    model.eval()
    try:
        for _, x in length_batches(seqs, batch_size, device):
            T = x.shape[1]
            if T < 2:
                continue
            preds = [lg.argmax(-1) for lg in model(x)]  # n tensors (B, T)
            greedy = preds[0]
            agree = []  # agree[k-2]: head k's draft at t == head 1's token at t+k-1, for t = 0 .. T-k
            for k in range(2, n + 1):
                if T - k + 1 <= 0:
                    break
                hit = preds[k - 1][:, :T - k + 1] == greedy[:, k - 1:]
                hits[k] += int(hit.sum())
                count[k] += hit.numel()
                agree.append(hit)
            if len(agree) == n - 1 and T - n + 1 > 0:
                lead = torch.stack([a[:, :T - n + 1] for a in agree]).long().cumprod(dim=0).sum(dim=0)
                run_sum += int(lead.sum())
                run_count += lead.numel()
    finally:
        model.train(was_training)
    out = {f"agreement/head={k}": hits[k] / count[k] for k in range(2, n + 1) if count[k]}
    if run_count:
        out["agreement/tokens_per_forward"] = 1.0 + run_sum / run_count
    return out
