"""Greedy self-speculative decoding with the extra heads (Stern et al. 2018; Gloeckle et al. 2024, App. A).

An MTP model with n heads predicts, at position t, the tokens t+1 .. t+n.
Greedy blockwise parallel decoding uses heads 2..k as free drafters and the
next-token head (head 1) as the verifier, with a KV cache::

    prefill: run the prompt; head 1 at the last position gives the next token x
             (always right: it IS greedy decoding), heads 2..k give drafts d2..dk
    loop:    run [x, d2, ..., dk] in ONE forward (k positions, cached);
             head 1 at each of these positions is the greedy token after it:
                 g1 follows x, g2 follows d2, ...
             accept the longest prefix of drafts with d_{i+1} == g_i, say a of them,
             plus the "bonus" token g_{a+1} (head 1 after the last accepted draft);
             move the cache back to the accepted positions (KVCache.seek) and
             take the new drafts from heads 2..k at the last accepted position.

Every emitted token is head 1's greedy choice given the emitted prefix, so the
output is the greedy output token for token (tested against
``MTPModel.generate`` and against uncached greedy decoding), while each
forward after the prefill emits 1..k tokens.

Batches: the rows of a batch share one cache length, so a step accepts the
*smallest* number of drafts any row accepted (simple and exact; rows that
accepted more just re-verify those drafts next step). Prompts of different
lengths go in separate batches (no padding), as in ``lab.decode``.

Which head kinds can draft (all of them):

* ``parallel``, ``linear``, ``causal``, ``anticausal``: one forward gives all
  heads' logits at the last position. Parallel and linear heads all read the
  trunk output, so the fast path runs the k heads as one batched block
  (``lab.model.StackedHeads``: stacked weights, ``torch.bmm``), checked
  against the heads' own outputs when it is built: if they differ, decoding
  raises (``fused=False`` runs the heads one by one). With weighted hidden
  states (``model.head_input=weighted``) it stacks the heads' mixes too: each
  head's rows read its own mix of the trunk's hidden states.
* ``sequential`` (DeepSeek-V3 MTP modules): module k at position t reads the
  TRUE token x[t+k-1], which at decoding time is not known yet. We use the
  drafted tokens instead (as DeepSeek-V3 does): module 2 reads head 1's
  greedy token, module 3 reads module 2's draft, ... computed one module
  after the other. A module's cache entry at position p is exact once
  x[p+k-1] is accepted; until then it holds a draft-based entry and is
  recomputed each step (a short lag of k-1 positions per module).

Tokens per forward: the prefill emits the first token; every forward after it
emits 1 + (accepted drafts) tokens, so ``tokens_per_forward = (tokens - 1) /
forwards after the prefill`` (the prefill and its one token are left out on
both sides; plain greedy decoding scores exactly 1.0). Sequential heads also
run k-1 small draft passes (one module each) per step; they are not counted as
forwards but they are in the wall clock.

Cost: a step runs the trunk and all k heads on k positions, greedy decoding
the trunk and head 1 on one. Where a forward costs about the same for k
positions as for one (a large model on a GPU, memory bound) and the heads are
a small part of the layers, the speed-up approaches tokens per forward (the
paper: 3.5 tokens per forward, 3.05x). A small parameter-matched model on a
CPU is the opposite case: with ``--size 1M --n 4`` the 4 head blocks are 4 of
the 5 layers, the prefill runs them all on the prompt (their caches need it),
and a 4-position block costs about twice a 1-position one, so wall-clock gains
are far below tokens per forward there (``mtplab bench decode`` measures it:
``lab.bench_decode``). The teacher-forced estimate of acceptance that every
evaluation records is ``lab.agreement``.

Example:
    >>> import torch
    >>> from lab.config import ModelConfig
    >>> from lab.model import MTPModel
    >>> torch.manual_seed(0) and None
    >>> model = MTPModel(ModelConfig(size="custom", d_model=32, layers=4, n_heads=2, n=3, vocab_size=40).resolved()).eval()
    >>> prompt = torch.randint(0, 40, (2, 5))
    >>> stats = DecodeStats()
    >>> out = speculative_generate(model, prompt, 12, heads=3, stats=stats)
    >>> torch.equal(out, model.generate(prompt, 12)), stats.tokens_per_forward >= 1.0
    (True, True)
"""

from __future__ import annotations

import functools
import weakref
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from lab.config import SEQUENTIAL_KINDS
from lab.decode import run_batched
from lab.errors import UserError
from lab.model import KVCache, StackedHeads

FUSABLE = ("parallel", "linear")  # heads that all read the trunk output: batched into one op


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------

@dataclass
class DecodeStats:
    """Counters of speculative decoding, accumulated over calls.

    ``forwards``: model forwards after the prefill (verification steps);
    ``advanced``: tokens those forwards emitted, per row (the first token of
    each call comes from the prefill and is not counted); ``tokens``: all
    emitted tokens over all rows; ``drafted[j]``/``accepted[j]``: how often
    head j's draft was verified (every earlier draft of the block having been
    accepted by that row) and how often it was accepted.

    Example:
        >>> s = DecodeStats(forwards=4, advanced=10)
        >>> s.tokens_per_forward
        2.5
        >>> s.drafted[2], s.accepted[2] = 4, 3
        >>> s.acceptance()
        {2: 0.75}
    """

    forwards: int = 0
    advanced: int = 0
    tokens: int = 0
    prefills: int = 0
    drafted: dict = field(default_factory=lambda: defaultdict(int))
    accepted: dict = field(default_factory=lambda: defaultdict(int))

    @property
    def tokens_per_forward(self) -> float:
        """Tokens emitted per forward after the prefill (1.0 for plain greedy decoding)."""
        return self.advanced / self.forwards if self.forwards else 1.0

    def acceptance(self) -> dict[int, float]:
        """Per draft head j >= 2: accepted / verified, given the earlier drafts were accepted."""
        return {j: self.accepted[j] / self.drafted[j] for j in sorted(self.drafted) if self.drafted[j]}


# ---------------------------------------------------------------------------
# Engines: run blocks of tokens through trunk + heads with a KV cache
# ---------------------------------------------------------------------------
#
# An engine has accepted ``length`` positions. forward(block) runs the block
# (B, T) at positions length .. length+T-1 and returns head 1's argmax at each
# of them (B, T); accept(n, nxt) keeps the first n of those positions
# (length += n), given head 1's token after them (nxt, (B,)), and returns the
# drafts of heads 2..k at the last kept position (B, k-1).

class _Engine:
    def __init__(self, model, batch: int, max_len: int, k: int):
        self.model, self.k, self.batch = model, k, batch
        self.length = 0  # positions accepted: the next forward runs from here
        p = model.lm_head.weight
        self.device, self.dtype = p.device, p.dtype

    def _no_drafts(self):
        return torch.empty(self.batch, 0, dtype=torch.long, device=self.device)


class _GenericEngine(_Engine):
    """Any head kind but sequential, through the model's own modules."""

    def __init__(self, model, batch, max_len, k):
        super().__init__(model, batch, max_len, k)
        self.cache = model.new_cache(batch, max_len)

    def forward(self, block):
        m = self.model
        self.cache.seek(self.length)
        h = m.trunk_forward(block, self.cache)
        # every head runs at every position: the heads' own caches must stay complete
        self.zs = m.head_states(h, None, upto=self.k, cache=self.cache)
        return m.logits(self.zs[0]).argmax(-1)

    def accept(self, n, nxt):
        self.length += n
        self.cache.seek(self.length)
        if self.k == 1:
            return self._no_drafts()
        last = torch.stack([z[:, n - 1] for z in self.zs[1:]])  # (k-1, B, d): heads 2..k at the last kept position
        return self.model.logits(last).argmax(-1).T


_STACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its heads' weights key, StackedHeads)


def stacked_heads(model, k: int) -> StackedHeads:
    """The model's first k heads as one :class:`lab.model.StackedHeads`, checked against the heads themselves.

    Kept per model (beside it, not on it) until a head parameter changes: its
    identity, storage or version counter, so an optimizer step (an in-place
    update), loading weights or moving the model builds it again. Each build
    is checked by :func:`check_stacked`: a StackedHeads that does not compute
    the heads' own states raises, it never falls back silently.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> stacked_heads(m, 2) is stacked_heads(m, 2), stacked_heads(m, 2).k
        (True, 2)
    """
    mix = list(model.head_mix[:k]) if model.config.head_input == "weighted" else None  # weighted hidden states
    params = [p for head in model.heads[:k] for p in head.parameters()] + (mix or [])
    key = (k, tuple((id(p), p.data_ptr(), p._version) for p in params))
    cached = _STACKED.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    stacked = StackedHeads(model.config, model.heads[:k], mix=mix)
    check_stacked(model, stacked)
    _STACKED[model] = (key, stacked)
    return stacked


@torch.no_grad()
def check_stacked(model, stacked: StackedHeads) -> None:
    """RuntimeError unless ``stacked`` computes the model's own head states z_1..z_k.

    Runs a short random sequence through both, against their KV caches (a
    prefill of 3 positions, then blocks of 2 and 1), and compares. A
    difference means ``lab.model.StackedHeads`` no longer follows the heads'
    code: the fused engine would decode wrongly, so decoding stops there.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel, StackedHeads
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> check_stacked(m, StackedHeads(m.config, m.heads))
        >>> check_stacked(m, StackedHeads(m.config, m.heads[::-1]))
        Traceback (most recent call last):
        ...
        RuntimeError: the fused heads (lab.model.StackedHeads) do not compute this model's parallel heads: ...
    """
    k, cfg = stacked.k, model.config
    states = (cfg.trunk_layers + 1,) if cfg.head_input == "weighted" else ()  # the trunk output's shape
    h = torch.randn(*states, 2, 6, cfg.d_model, generator=torch.Generator().manual_seed(0)).to(model.lm_head.weight)
    cache, stacked_cache = model.new_cache(2, 6), stacked.new_cache(2, 6)
    tol = max(1e-4, 10 * torch.finfo(h.dtype).eps)
    for start, end in ((0, 3), (3, 5), (5, 6)):
        cache.seek(start)
        if stacked_cache is not None:
            stacked_cache.seek(start)
        ref = torch.stack(model.head_states(h[..., start:end, :], None, upto=k, cache=cache))
        got = stacked(h[..., start:end, :], model.rope, stacked_cache)
        if got.shape != ref.shape or not torch.allclose(got, ref, atol=tol, rtol=tol):
            diff = f"shape {tuple(got.shape)} instead of {tuple(ref.shape)}" if got.shape != ref.shape else \
                f"largest difference {float((got - ref).abs().max()):.3g}"
            raise RuntimeError(f"the fused heads (lab.model.StackedHeads) do not compute this model's "
                               f"{model.config.head_kind} heads: {diff} at positions {start}..{end - 1}; "
                               "make StackedHeads follow the heads' code (decode with fused=False meanwhile)")


class _FusedEngine(_Engine):
    """Parallel or linear heads: the k heads run as one batched op on the trunk output.

    The trunk runs through the model's own blocks (its KV cache has the
    trunk's slots only), the k heads as one :class:`lab.model.StackedHeads`
    (their matrices stacked for ``torch.bmm``; one attention call over a
    cache of batch k*B), checked against the model's heads when it is built
    (:func:`stacked_heads`).
    """

    def __init__(self, model, batch, max_len, k):
        super().__init__(model, batch, max_len, k)
        cfg = model.config
        self.cache = KVCache(cfg.trunk_layers, batch, cfg.n_heads, cfg.d_model // cfg.n_heads, max_len,
                             self.device, self.dtype)
        self.heads = stacked_heads(model, k)
        self.heads_cache = self.heads.new_cache(batch, max_len)  # None for linear heads

    def head_states(self, h):
        """z_1..z_k stacked: h (B, T, d) at positions length.. -> (k, B, T, d)."""
        if self.heads_cache is not None:
            self.heads_cache.seek(self.length)
        return self.heads(h, self.model.rope, self.heads_cache)

    def forward(self, block):
        self.cache.seek(self.length)
        self.zs = self.head_states(self.model.trunk_forward(block, self.cache))
        return self.model.logits(self.zs[0]).argmax(-1)

    def accept(self, n, nxt):
        self.length += n
        if self.k == 1:
            return self._no_drafts()
        return self.model.logits(self.zs[1:, :, n - 1]).argmax(-1).T


class _SequentialEngine(_Engine):
    """DeepSeek-V3 modules: module j reads z_{j-1} and the token at offset j-1, drafted if not known.

    State after ``accept``: ``seq[:, :length]`` are the processed tokens,
    ``nxt`` is x[length]; the first ``exact[j]`` positions of module j's cache
    (and of ``z[j]``) are exact: those p with x[p+j-1] known, i.e.
    p <= length-j+1. Each step recomputes module j from ``exact[j]`` to
    length-1, reading drafts d_2..d_{j-1} beyond x[length].
    """

    def __init__(self, model, batch, max_len, k):
        super().__init__(model, batch, max_len, k)
        self.cache = model.new_cache(batch, max_len)
        d = model.config.d_model
        self.seq = torch.zeros(batch, max_len, dtype=torch.long, device=self.device)
        self.z = [None] + [torch.zeros(batch, max_len, d, device=self.device, dtype=self.dtype)
                           for _ in range(1, k)]  # z[j]: states of module j (1-based), j < k
        self.exact = [0] * (k + 1)

    def forward(self, block):
        m = self.model
        self.cache.seek(self.length)
        h = m.trunk_forward(block, self.cache)
        self.block, self.z1 = block, m.heads[0](m.head_input(0, h), m.rope, self.cache)
        return m.logits(self.z1).argmax(-1)

    def accept(self, n, nxt):
        m, start = self.model, self.length
        end = self.length = start + n
        self.seq[:, start:end] = self.block[:, :n]
        if self.k == 1:
            self.cache.seek(end)
            return self._no_drafts()
        self.z[1][:, start:end] = self.z1[:, :n]
        tokens = torch.cat([self.seq[:, :end], nxt[:, None]], dim=1)  # x[0..end], then the drafts
        drafts = []
        for j in range(2, self.k + 1):
            redo = self.exact[j]
            self.cache.seek(redo)  # module j's slot: rewrite positions redo .. end-1
            emb = m.tok_emb(tokens[:, redo + j - 1:end + j - 1])
            zj = m.heads[j - 1](self.z[j - 1][:, redo:end], emb, m.rope, self.cache, slot=m.head_slot(j - 1))
            if j < self.k:
                self.z[j][:, redo:end] = zj
            draft = m.logits(zj[:, -1]).argmax(-1)
            drafts.append(draft)
            tokens = torch.cat([tokens, draft[:, None]], dim=1)
            self.exact[j] = max(0, end - j + 2)
        self.cache.seek(end)
        return torch.stack(drafts, dim=1)


def make_engine(model, batch: int, max_len: int, k: int, *, fused: bool = True) -> _Engine:
    """The decoding engine for the model's head kind (batched heads where possible, and k > 1).

    The fused engine has no fallback: if its stacked heads do not compute the
    model's heads, this raises (:func:`check_stacked`); ``fused=False`` runs
    the heads one by one.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> type(make_engine(m, 1, 32, 2)).__name__, type(make_engine(m, 1, 32, 2, fused=False)).__name__
        ('_FusedEngine', '_GenericEngine')
    """
    kind = model.config.head_kind
    if kind in SEQUENTIAL_KINDS:
        return _SequentialEngine(model, batch, max_len, k)
    if fused and k > 1 and kind in FUSABLE:
        return _FusedEngine(model, batch, max_len, k)
    return _GenericEngine(model, batch, max_len, k)


# ---------------------------------------------------------------------------
# The decoding loop
# ---------------------------------------------------------------------------

def check_heads(model, heads: int | None) -> int:
    """The number of heads k to decode with (default: all n); UserError if drafting is impossible.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> check_heads(m, None)
        2
        >>> check_heads(m, 3)
        Traceback (most recent call last):
        ...
        lab.errors.UserError: --heads 3 is larger than the model's n=2 heads; use 1..2
    """
    n = model.config.n
    if heads is None:
        heads = n
    if heads > n:
        raise UserError(f"--heads {heads} is larger than the model's n={n} heads; use 1..{n}")
    if heads < 1:
        raise UserError(f"--heads must be at least 1 (1 = plain greedy decoding), got {heads}")
    return heads


def run_loop(engine: _Engine, idx: torch.Tensor, max_new_tokens: int, stop_token: int | None = None,
             stats: DecodeStats | None = None) -> torch.Tensor:
    """The blockwise draft-verify-accept loop on an engine (see the module docstring).

    Returns the new tokens (B, <= max_new_tokens), cut exactly where
    ``MTPModel.generate`` cuts: after the token at which every row has
    produced ``stop_token``.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> x = torch.tensor([[1, 2, 3]])
        >>> run_loop(make_engine(m, 1, 3 + 5 + 2, 2), x, 5).shape
        torch.Size([1, 5])
    """
    batch, prompt_len = idx.shape
    k = engine.k
    stats = stats if stats is not None else DecodeStats()
    stats.prefills += 1
    nxt = engine.forward(idx)[:, -1]
    out = [nxt[:, None]]
    emitted = 1
    done = torch.zeros(batch, dtype=torch.bool, device=idx.device)
    finished = max_new_tokens <= 1
    verified: dict[int, list[torch.Tensor]] = defaultdict(list)  # block size -> drafts accepted per row
    if stop_token is not None:
        done = nxt == stop_token
        finished = finished or bool(done.all())
    if not finished:
        drafts = engine.accept(prompt_len, nxt)
    while not finished:
        size = min(k, max_new_tokens - emitted)  # block size: never emit past max_new_tokens
        block_drafts = drafts[:, :size - 1]
        block = torch.cat([nxt[:, None], block_drafts], dim=1) if size > 1 else nxt[:, None]
        greedy = engine.forward(block)  # (B, size): head 1's token after each block token
        stats.forwards += 1
        if size > 1:
            agreed = (block_drafts == greedy[:, :-1]).long().cumprod(dim=1).sum(dim=1)  # drafts each row accepted
            accepted = int(agreed.min())
            verified[size].append(agreed)
            new = torch.cat([block_drafts[:, :accepted], greedy[:, accepted:accepted + 1]], dim=1)
        else:
            accepted, new = 0, greedy
        nxt = greedy[:, accepted]
        if stop_token is not None and batch == 1:  # one row: find the stop token in a list
            row = new[0].tolist()
            if stop_token in row:
                new = new[:, :row.index(stop_token) + 1]
                finished = True
        elif stop_token is not None:  # rows are done from their first stop token on; stop when all are
            hit = done[:, None] | (new == stop_token).cummax(dim=1).values
            all_done = hit.all(dim=0)
            if bool(all_done.any()):
                new = new[:, :int(all_done.long().argmax()) + 1]
                finished = True
            done = hit[:, -1]
        out.append(new)
        emitted += new.shape[1]
        stats.advanced += new.shape[1]
        finished = finished or emitted >= max_new_tokens
        if not finished:
            drafts = engine.accept(accepted + 1, nxt)
    for size, rows in verified.items():  # head i+2 is verified where a row accepted the i drafts before it
        agreed = torch.cat(rows)
        for i in range(size - 1):
            stats.drafted[i + 2] += int((agreed >= i).sum())
            stats.accepted[i + 2] += int((agreed > i).sum())
    result = torch.cat(out, dim=1)
    stats.tokens += result.numel()
    return result


@torch.no_grad()
def speculative_generate(model, idx: torch.Tensor, max_new_tokens: int, *, heads: int | None = None,
                         stop_token: int | None = None, stats: DecodeStats | None = None,
                         fused: bool = True) -> torch.Tensor:
    """Greedy decoding with k = ``heads`` heads drafting: same output as ``model.generate``.

    idx (B, T) -> new tokens (B, <= max_new_tokens), stopping once every
    row has produced ``stop_token``, exactly like ``MTPModel.generate``.
    ``stats`` (a :class:`DecodeStats`) accumulates forwards and acceptance.
    ``heads=1`` is plain greedy decoding through the same loop.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> torch.manual_seed(1) and None
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, head_kind="sequential",
        ...                          vocab_size=20).resolved()).eval()
        >>> x = torch.randint(0, 20, (3, 4))
        >>> torch.equal(speculative_generate(m, x, 9, stop_token=5), m.generate(x, 9, stop_token=5))
        True
    """
    k = check_heads(model, heads)
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise UserError("speculative_generate needs a (batch, length) tensor with a non-empty prompt")
    B, T = idx.shape
    if max_new_tokens < 1:
        return idx.new_zeros(B, 0)
    was_training = model.training
    if was_training:
        model.eval()
    try:
        engine = make_engine(model, B, T + max_new_tokens + k, k, fused=fused)
        return run_loop(engine, idx, max_new_tokens, stop_token, stats)
    finally:
        if was_training:
            model.train()


@torch.no_grad()
def speculative_decode(model, prompts: list[list[int]], max_new_tokens: int, *, heads: int | None = None,
                       stop_token: int | None = None, batch_size: int = 64, stats: DecodeStats | None = None,
                       fused: bool = True) -> list[list[int]]:
    """Speculative decoding of token lists, batched by prompt length (no padding).

    Same contract as ``lab.decode.greedy_generate``: the new tokens of each
    prompt in input order, cut after ``stop_token`` (kept) or after
    ``max_new_tokens``.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> from lab.decode import greedy_generate
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> ps = [[1, 2], [3, 4, 5], [6, 7]]
        >>> speculative_decode(m, ps, 6, stop_token=3) == greedy_generate(m, ps, 6, stop_token=3)
        True
    """
    generate = functools.partial(speculative_generate, model, max_new_tokens=max_new_tokens, heads=heads,
                                 stop_token=stop_token, stats=stats, fused=fused)
    return run_batched(prompts, generate, stop_token=stop_token, batch_size=batch_size,
                       device=next(model.parameters()).device)


@torch.no_grad()
def uncached_greedy(model, idx: torch.Tensor, max_new_tokens: int, stop_token: int | None = None) -> torch.Tensor:
    """Greedy decoding that re-runs the whole sequence at every step (no KV cache): the reference.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=2, n_heads=2, vocab_size=20).resolved()).eval()
        >>> x = torch.tensor([[1, 2, 3], [4, 5, 6]])
        >>> torch.equal(uncached_greedy(m, x, 7), m.generate(x, 7))
        True
    """
    seq, out = idx, []
    done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        nxt = model(seq, heads=1)[0][:, -1].argmax(-1)
        out.append(nxt)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        if stop_token is not None:
            done |= nxt == stop_token
            if bool(done.all()):
                break
    return torch.stack(out, dim=1) if out else idx.new_zeros(idx.shape[0], 0)
