"""Multi-token prediction by marginalization: what a next-token model already knows about x[t+k].

A next-token head predicts x[t+2] from x[<=t] by summing over the token v in
between (Mehra et al. 2025, "On multi-token prediction for efficient LLM
inference", section 8 of the reference notes)::

    P(x[t+2] = y | x<=t) = sum_v  P(v | x<=t) * P(y | x<=t, v)
    P(x[t+3] = y | x<=t) = sum_{v1, v2}  P(v1 | x<=t) * P(v2 | x<=t, v1) * P(y | x<=t, v1, v2)

every factor from head 1. :func:`future_accuracy` reports, on windows of
held-out text, the top-1 accuracy of that marginal at predicting x[t+k] next
to the top-1 accuracy of head k (models with n >= k) at the same positions:

    future_acc/k=K/marginal       mean over positions t of [argmax_y P(x[t+K] = y | x<=t) == x[t+K]]
    future_acc/k=K/head           mean over the same t of [argmax head_K(x<=t)[t] == x[t+K]]   (n >= K only)
    future_acc/k=K/marginal_mass  mean over t of the probability mass of the intermediate paths summed
                                  over: 1.0 when exact, less under the top-m approximation

Positions: every t of a window with t + K inside it (and, with a ``mask``,
x[t+1] .. x[t+K] all scored targets: the tokens summed over are ones the
model was trained to predict, as in drafting an answer), windows in order,
at most ``max_positions`` per K.
Sequential heads (DeepSeek-V3 modules) read the token after t as an input;
for ``/head`` they read head 1's greedy draft there and each module's draft
after it (as in self-speculative decoding), never a true token past t.

Exact or top-m. The sum runs over all V^(K-1) intermediate paths when there
are at most ``exact_limit`` of them (EXACT_LIMIT = 512: K=2 for V <= 512,
e.g. the byte tokenizer's 257 tokens; K=3 for V <= 22). Otherwise it runs
over a tree of the ``top_m`` most likely tokens at each step (the m most
likely v1 under P(. | x<=t), then the m most likely v2 under P(. | x<=t, v1)
for each: m^(K-1) paths), each path weighted by its probability, NOT
renormalised: the truncated sum is the exact marginal minus the paths left
out, its total mass (``marginal_mass``) is the probability of the paths kept.
Renormalising would divide by that one number per position, so the argmax,
and every accuracy here, is the same either way. Measured error of the
approximation: :func:`approximation_error` (the README quotes it).

Cost: for each position, one forward of the model per intermediate step, on
all the paths as a batch of one-to-(K-1)-token continuations that read the
window's prefix from a KV cache (:class:`SharedPrefix`): K=2 exact is about
V tokens of forward work per position (T forwards of batch V per window).
Measured on one CPU thread, 512 positions of a 1M model (context 128):
polyarith (V=257) K=2 exact 17 s, K=3 top-16 27 s; induction (V=2048)
K=2 top-16 2 s, K=3 top-16 28 s.

Example:
    >>> import torch
    >>> from lab.config import ModelConfig
    >>> from lab.model import MTPModel
    >>> torch.manual_seed(0) and None
    >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=11).resolved())
    >>> out = future_accuracy(m, torch.randint(0, 11, (2, 8)), ks=(2, 3))
    >>> sorted(out)
    ['future_acc/k=2/head', 'future_acc/k=2/marginal', 'future_acc/k=2/marginal_mass', 'future_acc/k=3/marginal', 'future_acc/k=3/marginal_mass']
    >>> out["future_acc/k=2/marginal_mass"], out["future_acc/k=3/marginal_mass"]  # V=11: both exact
    (1.0, 1.0)
"""

from __future__ import annotations

import numpy as np
import torch

from lab.config import SEQUENTIAL_KINDS
from lab.model import KVCache

EXACT_LIMIT = 512  # marginalize exactly when there are at most this many intermediate paths (V^(k-1))
DEFAULT_TOP_M = 16  # otherwise: the m most likely tokens at each intermediate step
MAX_POSITIONS = 512  # positions t per k that future_accuracy scores (the cost is per position)
_ROW_BUDGET = 1 << 24  # elements of one layer's prefix keys, repeated over a probe batch (64 MiB in fp32)


class SharedPrefix:
    """A read-only KV cache: many continuations of one prefix, which the cache of a batch-1 run holds.

    Duck-types ``lab.model.KVCache`` for the attention layers: ``length`` is
    the prefix length (the continuations start there, so their rotary
    positions are right), and ``update(slot, k, v)`` returns the prefix's
    keys and values repeated over the batch, followed by the new ones
    (B, H, length + T, hd). Nothing is written: the prefix stays as it is for
    the next batch of continuations, at any shorter length.
    """

    def __init__(self, cache, length: int):
        self.cache, self.length = cache, length
        self._mask = None  # block_mask's, as KVCache's

    block_mask = KVCache.block_mask  # the causal mask of T new queries past the prefix

    def update(self, slot: int, k, v):
        B = k.shape[0]
        pk = self.cache.k[slot][:, :, :self.length].expand(B, -1, -1, -1)
        pv = self.cache.v[slot][:, :, :self.length].expand(B, -1, -1, -1)
        return torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)


def _probs(logits):
    """Softmax in at least float32 (float64 models stay float64)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(-1)


def _continuation_probs(model, cache, t: int, paths):
    """P(next token | x<=t, path) for paths (P, j) of tokens at positions t+1..t+j: (P, V), head 1.

    The prefix x<=t is read from ``cache`` (a batch-1 cache of the window);
    the paths run in batches sized so that the repeated prefix keys of one
    layer stay under _ROW_BUDGET elements.
    """
    P, j = paths.shape
    rows = max(1, _ROW_BUDGET // ((t + 1 + j) * model.config.d_model))
    prefix = SharedPrefix(cache, t + 1)
    out = [model(paths[i:i + rows], heads=1, cache=prefix)[0][:, -1] for i in range(0, P, rows)]
    return _probs(torch.cat(out))


@torch.no_grad()
def window_marginals(model, x, k: int, top_m: int | None = None, positions=None):
    """P(x[t+k] = . | x<=t) from head 1 by marginalizing over the k-1 tokens in between, for one window.

    ``x`` (T,) tokens; ``positions`` the t to compute (default all t with
    t + k < T). ``top_m`` None sums over every intermediate path (exact);
    an int sums over the tree of the top_m most likely tokens at each step
    (m^(k-1) paths, unnormalised; top_m >= V keeps every path). Returns the
    marginals (len(positions), V) and the probability mass of the paths summed
    over (len(positions),): 1 when exact.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=2, n_heads=2, vocab_size=9).resolved()).double()
        >>> p, mass = window_marginals(m, torch.tensor([1, 2, 3, 4, 5]), 2)
        >>> p.shape, torch.allclose(p.sum(-1), torch.ones(3, dtype=p.dtype)), mass.tolist()
        (torch.Size([3, 9]), True, [1.0, 1.0, 1.0])
    """
    if k < 2:
        raise ValueError(f"marginalization predicts k >= 2 tokens ahead, got k={k}")
    T, V = x.shape[0], model.config.vocab_size
    positions = list(range(T - k) if positions is None else positions)
    cache = model.new_cache(1, T)
    first = _probs(model(x[None], heads=1, cache=cache)[0][0])  # (T, V): P(x[t+1] = . | x<=t) at every t
    marginals, masses = [], []
    for t in positions:
        paths = x.new_zeros(1, 0)  # (P, j): the intermediate tokens of each path so far, P=1, j=0
        weight = first.new_ones(1)  # (P,): P(path | x<=t)
        dist = first[t][None]  # (P, V): P(next token | x<=t, path)
        for _ in range(k - 1):
            if top_m is None:  # every token continues every path
                p, nxt = dist, torch.arange(V, device=x.device).expand_as(dist)
            else:  # the top_m most likely tokens continue each path
                p, nxt = dist.topk(min(top_m, V), dim=-1)
            weight = (weight[:, None] * p).flatten()  # (P * c,)
            paths = torch.cat([paths.repeat_interleave(nxt.shape[1], dim=0), nxt.reshape(-1, 1)], dim=1)
            dist = _continuation_probs(model, cache, t, paths)
        marginals.append(weight @ dist)  # sum over paths of P(path) P(x[t+k] = . | x<=t, path)
        masses.append(weight.sum())
    if not marginals:
        return first.new_zeros(0, V), first.new_zeros(0)
    return torch.stack(marginals), torch.stack(masses)


@torch.no_grad()
def head_predictions(model, x):
    """Each head's top-1 token at every position, from x<=t only: x (B, T) -> (n, B, T).

    Head i (1-based) at t predicts x[t+i]. Sequential modules i >= 2 read the
    token after t as an input: here module i reads module i-1's prediction
    (head 1's greedy token for module 2), as in self-speculative decoding.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=9).resolved())
        >>> head_predictions(m, torch.tensor([[1, 2, 3, 4]])).shape
        torch.Size([2, 1, 4])
    """
    if model.config.head_kind not in SEQUENTIAL_KINDS:
        return torch.stack([lg.argmax(-1) for lg in model(x)])
    h = model.trunk_forward(x)
    z = model.heads[0](model.head_input(0, h), model.rope)
    preds = [model.logits(z).argmax(-1)]
    for head in model.heads[1:]:  # module i at t reads z_{i-1} and emb(the prediction of x[t+i-1])
        z = head(z, model.tok_emb(preds[-1]), model.rope)
        preds.append(model.logits(z).argmax(-1))
    return torch.stack(preds)


def _rows(windows, mask):
    """(tokens, mask or None) per window, as numpy int64 rows (windows may differ in length)."""
    if isinstance(windows, torch.Tensor):
        windows = windows.cpu().numpy()
    rows = [np.asarray(w, dtype=np.int64) for w in windows]
    if mask is None:
        return [(r, None) for r in rows]
    if isinstance(mask, torch.Tensor):
        mask = mask.cpu().numpy()
    return [(r, np.asarray(m, dtype=bool)) for r, m in zip(rows, mask)]


def _positions(T: int, k: int, mask, budget: int) -> list[int]:
    # every token from t+1 to t+k a scored target: the model was trained to predict the tokens summed over too
    ts = [t for t in range(T - k) if mask is None or mask[t + 1:t + k + 1].all()]
    return ts[:max(0, budget)]


def paths_exact(vocab_size: int, k: int, exact_limit: int = EXACT_LIMIT) -> bool:
    """Whether k-step marginalization enumerates every path (V^(k-1) <= exact_limit).

    Example:
        >>> paths_exact(257, 2), paths_exact(257, 3), paths_exact(22, 3), paths_exact(50257, 2)
        (True, False, True, False)
    """
    return vocab_size ** (k - 1) <= exact_limit


@torch.no_grad()
def future_accuracy(model, windows, device=None, ks=(2,), top_m: int = DEFAULT_TOP_M, *, mask=None,
                    exact_limit: int = EXACT_LIMIT, max_positions: int = MAX_POSITIONS) -> dict[str, float]:
    """Top-1 accuracy of predicting x[t+k] by marginalizing head 1, next to head k's, on held-out windows.

    ``windows``: a LongTensor / array (N, T) or a list of token lists (e.g.
    ``lab.agreement.agreement_windows``, or ``Windows.heldout_batch()``'s
    tokens with its ``mask``: then only positions whose x[t+1..t+k] are all
scored targets count). Exact
    where V^(k-1) <= ``exact_limit``, else the top-``top_m`` tree (module
    docstring). At most ``max_positions`` positions per k, windows in order.
    Returns the ``future_acc/k=K/...`` metrics of the module docstring for
    each K in ``ks`` that has positions; ``/head`` only where n >= K.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, vocab_size=600).resolved())
        >>> out = future_accuracy(m, [[1, 2, 3, 4, 5, 6]], top_m=4)  # V=600 > 512: the top-4 approximation
        >>> sorted(out), out["future_acc/k=2/marginal_mass"] < 1
        (['future_acc/k=2/marginal', 'future_acc/k=2/marginal_mass'], True)
    """
    if any(k < 2 for k in ks):
        raise ValueError(f"future_accuracy predicts k >= 2 tokens ahead, got ks={tuple(ks)}")
    device = device or next(model.parameters()).device
    n, V = model.config.n, model.config.vocab_size
    m_for = {k: None if paths_exact(V, k, exact_limit) else top_m for k in ks}
    hits = {k: [0, 0] for k in ks}  # marginal hits, head hits
    count, mass = dict.fromkeys(ks, 0), dict.fromkeys(ks, 0.0)
    was_training = model.training
    model.eval()
    try:
        for row, row_mask in _rows(windows, mask):
            todo = {k: _positions(len(row), k, row_mask, max_positions - count[k]) for k in ks}
            if not any(todo.values()):
                if all(count[k] >= max_positions for k in ks):
                    break
                continue
            x = torch.from_numpy(row).to(device)
            preds = head_predictions(model, x[None])[:, 0] if n >= 2 else None  # (n, T)
            for k, ts in todo.items():
                if not ts:
                    continue
                probs, kept = window_marginals(model, x, k, m_for[k], ts)
                t = torch.tensor(ts, device=device)
                target = x[t + k]
                hits[k][0] += int((probs.argmax(-1) == target).sum())
                if n >= k:
                    hits[k][1] += int((preds[k - 1][t] == target).sum())
                count[k] += len(ts)
                mass[k] += float(kept.sum())
    finally:
        model.train(was_training)
    out = {}
    for k in ks:
        if count[k]:
            out[f"future_acc/k={k}/marginal"] = hits[k][0] / count[k]
            if n >= k:
                out[f"future_acc/k={k}/head"] = hits[k][1] / count[k]
            out[f"future_acc/k={k}/marginal_mass"] = round(mass[k] / count[k], 6)
    return out


@torch.no_grad()
def document_windows(task, records: list[dict], enc, context: int, count: int = 64) -> tuple[list, list]:
    """Held-out records as windows of their own: end-of-text + document, and which tokens are scored targets.

    Each window is one document, alone (as a prompt is at evaluation, and as a
    ``train.document_mask`` model saw every example), cut to ``context``
    tokens; the mask is False on the end-of-text token and on the record's
    context part (``Task.context``: polyarith's prompt), so positions are only
    counted where the target is something the model was trained to predict.
    ``count`` records, spread evenly over ``records`` (test and validation
    sets are sorted by difficulty).

    Example:
        >>> from generators import registry
        >>> from lab.tokenizers import byte_encoding
        >>> task = registry.create("polyarith", {"test_per_op": 2, "valid_per_op": 0})
        >>> docs, masks = document_windows(task, task.build("test", 0), byte_encoding(), 64, count=3)
        >>> len(docs), docs[0][0] == byte_encoding().eot_token, sum(masks[0])  # 5 answer digits + newline
        (3, True, 6)
    """
    from lab.decode import pick

    docs, masks = [], []
    for rec in pick(records, count):
        unscored = 1 + len(enc.encode_ordinary(task.context(rec)))  # end-of-text + the context part
        tokens = ([enc.eot_token] + enc.encode_ordinary(task.document(rec)))[:context]
        docs.append(tokens)
        masks.append([i >= unscored for i in range(len(tokens))])
    return docs, masks


def approximation_error(model, windows, k: int = 2, ms=(1, 2, 4, 8, 16, 32), *, mask=None,
                        max_positions: int = MAX_POSITIONS) -> dict[int, dict[str, float]]:
    """The top-m approximation against exact marginalization, at the same positions (a small vocabulary).

    Per m: ``acc_exact`` and ``acc_top_m`` (top-1 accuracy at predicting
    x[t+k]), ``argmax_agree`` (fraction of positions where both pick the same
    token), ``tv`` (mean total-variation distance between the exact marginal
    and the top-m one renormalised; at most 1 - mass), ``mass`` (mean mass of
    the paths kept). Positions as in :func:`future_accuracy` (``mask``,
    ``max_positions``). Cost: the exact marginal, V^(k-1) paths per position.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=2, n_heads=2, vocab_size=7).resolved()).double()
        >>> err = approximation_error(m, torch.randint(0, 7, (1, 6)), ms=(7,))
        >>> err[7]["tv"] < 1e-12, err[7]["argmax_agree"], round(err[7]["mass"], 12)
        (True, 1.0, 1.0)
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        exact, approx, targets = [], {m: [] for m in ms}, []
        budget = max_positions
        for row, row_mask in _rows(windows, mask):
            ts = _positions(len(row), k, row_mask, budget)
            if not ts:
                continue
            budget -= len(ts)
            x = torch.from_numpy(row).to(device)
            exact.append(window_marginals(model, x, k, None, ts)[0])
            for m in ms:
                approx[m].append(window_marginals(model, x, k, m, ts))
            targets.append(x[torch.tensor(ts, device=device) + k])
    finally:
        model.train(was_training)
    p, y = torch.cat(exact), torch.cat(targets)
    out = {}
    for m in ms:
        q, mass = (torch.cat(parts) for parts in zip(*approx[m]))
        tv = 0.5 * (q / mass[:, None] - p).abs().sum(-1)
        out[m] = {"acc_exact": float((p.argmax(-1) == y).float().mean()),
                  "acc_top_m": float((q.argmax(-1) == y).float().mean()),
                  "argmax_agree": float((q.argmax(-1) == p.argmax(-1)).float().mean()),
                  "tv": float(tv.mean()), "mass": float(mass.mean()), "positions": len(y)}
    return out
