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
             roll the cache back to the accepted positions (KVCache.truncate) and
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
  (stacked weights, ``torch.bmm``; tested to give the heads' own outputs).
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
are far below tokens per forward there (``mtplab bench decode`` measures it).

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
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from lab.decode import run_batched
from lab.errors import UserError
from lab.model import KVCache

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
# forward(block) runs the block (B, T) at positions L .. L+T-1 and returns head 1's
# argmax at each of them (B, T); accept(n, nxt) keeps the first n of those
# positions (L += n), given head 1's token after them (nxt, (B,)), and returns the
# drafts of heads 2..k at the last kept position (B, k-1).

class _Engine:
    def __init__(self, model, batch: int, max_len: int, k: int):
        self.model, self.k, self.B, self.L = model, k, batch, 0
        p = model.lm_head.weight
        self.device, self.dtype = p.device, p.dtype

    def _empty(self):
        return torch.empty(self.B, 0, dtype=torch.long, device=self.device)


class _GenericEngine(_Engine):
    """Any head kind but sequential, through the model's own modules."""

    def __init__(self, model, batch, max_len, k):
        super().__init__(model, batch, max_len, k)
        self.cache = model.new_cache(batch, max_len)

    def forward(self, block):
        m = self.model
        self.cache.truncate(self.L)
        h = m.trunk_forward(block, self.cache)
        # every head runs at every position: the heads' own caches must stay complete
        self.zs = m.head_states(h, None, upto=self.k, cache=self.cache)
        return m.logits(self.zs[0]).argmax(-1)

    def accept(self, n, nxt):
        self.L += n
        self.cache.truncate(self.L)
        if self.k == 1:
            return self._empty()
        z = torch.stack([z[:, n - 1] for z in self.zs[1:]])  # (k-1, B, d)
        return self.model.logits(z).argmax(-1).T


class _StackedLinear:
    """k bias-free Linear layers applied at once: x (k*B, T, in) -> (k*B, T, out), row block i by layer i."""

    def __init__(self, linears):
        self.W = torch.stack([lin.weight.detach().t() for lin in linears])  # (k, in, out)

    def __call__(self, x):
        k = self.W.shape[0]
        kB, T, d = x.shape
        return torch.bmm(x.reshape(k, (kB // k) * T, d), self.W).view(kB, T, -1)


class _StackedNorm:
    """k norm modules (their own forward) applied to the k row blocks of x (k*B, T, d)."""

    def __init__(self, norms):
        self.norms = list(norms)

    def __call__(self, x):
        xs = x.view(len(self.norms), -1, *x.shape[1:])
        return torch.stack([norm(xs[i]) for i, norm in enumerate(self.norms)]).view(x.shape)


def _stacked_block(blocks):
    """A stand-in for k ``lab.model.Block`` s that runs them as one, by the model's own forward code.

    ``Block.forward``, ``CausalSelfAttention.forward`` and ``MLP.forward``
    are called unbound on namespaces whose linear layers are
    :class:`_StackedLinear` and whose norms are :class:`_StackedNorm`; the
    batch dimension holds the k heads' rows one after the other, the KV cache
    has one slot of batch k*B.
    """
    import functools
    import types

    b0 = blocks[0]
    attn = types.SimpleNamespace(**{**vars(b0.attn), "qkv": _StackedLinear([b.attn.qkv for b in blocks]),
                                    "proj": _StackedLinear([b.attn.proj for b in blocks])})
    mlp = types.SimpleNamespace(**{**vars(b0.mlp), "up": _StackedLinear([b.mlp.up for b in blocks]),
                                   "down": _StackedLinear([b.mlp.down for b in blocks])})
    block = types.SimpleNamespace(**{**vars(b0), "slot": 0,
                                     "norm1": _StackedNorm(b.norm1 for b in blocks),
                                     "norm2": _StackedNorm(b.norm2 for b in blocks),
                                     "attn": functools.partial(type(b0.attn).forward, attn),
                                     "mlp": functools.partial(type(b0.mlp).forward, mlp)})
    return functools.partial(type(b0).forward, block)


def _stacked_heads(model, k: int):
    """The first k heads stacked (a :func:`_stacked_block` or a :class:`_StackedLinear`), cached on the model.

    The cache key holds every head parameter's identity and version counter,
    so an optimizer step (an in-place update) or loading weights rebuilds it.
    """
    heads = list(model.heads[:k])
    params = [p for h in heads for p in h.parameters()]
    key = (k, tuple((id(p), p.data_ptr(), p._version) for p in params))
    cached = model.__dict__.get("_speculative_stacked")
    if cached is not None and cached[0] == key:
        return cached[1]
    stacked = _StackedLinear(heads) if model.config.head_kind == "linear" else _stacked_block(heads)
    model.__dict__["_speculative_stacked"] = (key, stacked)
    return stacked


class _FusedEngine(_Engine):
    """Parallel or linear heads: the k heads run as one batched op on the trunk output.

    The trunk runs through the model's own blocks (its KV cache has the trunk's
    slots only). The k head blocks run as one (:func:`_stacked_block`: their
    matrices stacked for ``torch.bmm``, one attention call over a cache of
    batch k*B); linear heads are one ``bmm``. :func:`fused_matches` checks
    this against the model's own heads (once per model) and decoding falls
    back to the unfused engine if they ever disagree.
    """

    def __init__(self, model, batch, max_len, k):
        super().__init__(model, batch, max_len, k)
        cfg = model.config
        H, hd = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.cache = KVCache(cfg.trunk_layers, batch, H, hd, max_len, self.device, self.dtype)
        stacked = _stacked_heads(model, k)
        if cfg.head_kind == "linear":
            self.W = stacked.W
        else:
            self.block = stacked
            self.hcache = KVCache(1, k * batch, H, hd, max_len, self.device, self.dtype)

    def head_states(self, h):
        """z_1..z_k stacked: h (B, T, d) at positions L.. -> (k, B, T, d)."""
        k, (B, T, d) = self.k, h.shape
        if self.model.config.head_kind == "linear":
            return torch.bmm(h.reshape(1, B * T, d).expand(k, B * T, d), self.W).view(k, B, T, d)
        self.hcache.truncate(self.L)
        x = h.unsqueeze(0).expand(k, B, T, d).reshape(k * B, T, d)
        return self.block(x, self.model.rope, self.hcache).view(k, B, T, d)

    def forward(self, block):
        m = self.model
        self.cache.truncate(self.L)
        self.zs = self.head_states(m.trunk_forward(block, self.cache))
        return m.logits(self.zs[0]).argmax(-1)

    def accept(self, n, nxt):
        self.L += n
        if self.k == 1:
            return self._empty()
        return self.model.logits(self.zs[1:, :, n - 1]).argmax(-1).T


@torch.no_grad()
def fused_matches(model, *, atol: float = 1e-4) -> bool:
    """Whether the fused heads of :class:`_FusedEngine` compute the model's own head states.

    Runs a short random sequence through both (a prefill, then blocks of 2
    and 1 positions against the cache) and compares all n heads. The answer
    is remembered on the model (it depends on the code, not the weights).

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> fused_matches(MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2,
        ...                                    vocab_size=20).resolved()))
        True
    """
    cached = model.__dict__.get("_speculative_fused_ok")
    if cached is not None:
        return cached
    n, d = model.config.n, model.config.d_model
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(2, 6, d, generator=gen).to(model.lm_head.weight)
    ok = True
    try:
        engine = _FusedEngine(model, 2, 8, n)
        cache = model.new_cache(2, 8)
        for start, end in ((0, 3), (3, 5), (5, 6)):
            engine.L = start
            cache.truncate(start)
            fused = engine.head_states(h[:, start:end])
            ref = torch.stack(model.head_states(h[:, start:end], None, cache=cache))
            ok = ok and fused.shape == ref.shape and torch.allclose(fused, ref, atol=atol, rtol=atol)
    except Exception:  # the model's code changed shape under the stand-in: use the unfused engine
        ok = False
    model.__dict__["_speculative_fused_ok"] = ok
    return ok


class _SequentialEngine(_Engine):
    """DeepSeek-V3 modules: module j reads z_{j-1} and the token at offset j-1, drafted if not known.

    State after ``accept``: ``seq[:, :L]`` are the processed tokens, ``nxt``
    is x[L]; ``E[j]`` positions of module j's cache (and of ``z[j]``) are
    exact: those p with x[p+j-1] known, i.e. p <= L-j+1. Each step recomputes
    module j from E[j] to L-1, reading drafts d_2..d_{j-1} beyond x[L].
    """

    def __init__(self, model, batch, max_len, k):
        super().__init__(model, batch, max_len, k)
        self.cache = model.new_cache(batch, max_len)
        d = model.config.d_model
        self.seq = torch.zeros(batch, max_len, dtype=torch.long, device=self.device)
        self.z = [None] + [torch.zeros(batch, max_len, d, device=self.device, dtype=self.dtype)
                           for _ in range(1, k)]  # z[j]: states of module j (1-based), j < k
        self.E = [0] * (k + 1)

    def forward(self, block):
        m = self.model
        self.cache.truncate(self.L)
        h = m.trunk_forward(block, self.cache)
        self.block, self.z1 = block, m.heads[0](h, m.rope, self.cache)
        return m.logits(self.z1).argmax(-1)

    def accept(self, n, nxt):
        m, L0 = self.model, self.L
        L = self.L = L0 + n
        self.seq[:, L0:L] = self.block[:, :n]
        if self.k == 1:
            self.cache.truncate(L)
            return self._empty()
        self.z[1][:, L0:L] = self.z1[:, :n]
        ext = torch.cat([self.seq[:, :L], nxt[:, None]], dim=1)  # x[0..L], then the drafts
        drafts = []
        for j in range(2, self.k + 1):
            s = self.E[j]
            self.cache.truncate(s)  # module j's slot: rewrite positions s .. L-1
            emb = m.tok_emb(ext[:, s + j - 1:L + j - 1])
            zj = m.heads[j - 1](self.z[j - 1][:, s:L], emb, m.rope, self.cache)
            if j < self.k:
                self.z[j][:, s:L] = zj
            d = m.logits(zj[:, -1]).argmax(-1)
            drafts.append(d)
            ext = torch.cat([ext, d[:, None]], dim=1)
            self.E[j] = max(0, L - j + 2)
        self.cache.truncate(L)
        return torch.stack(drafts, dim=1)


def make_engine(model, batch: int, max_len: int, k: int, *, fused: bool = True) -> _Engine:
    """The decoding engine for the model's head kind (batched heads where possible, and k > 1).

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> type(make_engine(m, 1, 32, 2)).__name__, type(make_engine(m, 1, 32, 2, fused=False)).__name__
        ('_FusedEngine', '_GenericEngine')
    """
    kind = model.config.head_kind
    if kind == "sequential":
        return _SequentialEngine(model, batch, max_len, k)
    if fused and k > 1 and kind in FUSABLE and fused_matches(model):
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
    B, T = idx.shape
    k = engine.k
    stats = stats if stats is not None else DecodeStats()
    stats.prefills += 1
    nxt = engine.forward(idx)[:, -1]
    out = [nxt[:, None]]
    emitted = 1
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)
    finished = max_new_tokens <= 1
    verified: dict[int, list[torch.Tensor]] = defaultdict(list)  # block size -> drafts accepted per row
    if stop_token is not None:
        done = nxt == stop_token
        finished = finished or bool(done.all())
    if not finished:
        drafts = engine.accept(T, nxt)
    while not finished:
        kk = min(k, max_new_tokens - emitted)  # block size: never emit past max_new_tokens
        d = drafts[:, :kk - 1]
        block = torch.cat([nxt[:, None], d], dim=1) if kk > 1 else nxt[:, None]
        g = engine.forward(block)  # (B, kk): head 1's token after each block token
        stats.forwards += 1
        if kk > 1:
            ok = (d == g[:, :-1]).long().cumprod(dim=1).sum(dim=1)  # drafts each row accepted
            a = int(ok.min())
            verified[kk].append(ok)
            new = torch.cat([d[:, :a], g[:, a:a + 1]], dim=1)
        else:
            a, new = 0, g
        nxt = g[:, a]
        if stop_token is not None and B == 1:  # one row: find the stop token in a list
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
            drafts = engine.accept(a + 1, nxt)
    for kk, oks in verified.items():  # head i+2 is verified where a row accepted the i drafts before it
        ok = torch.cat(oks)
        for i in range(kk - 1):
            stats.drafted[i + 2] += int((ok >= i).sum())
            stats.accepted[i + 2] += int((ok > i).sum())
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


# ---------------------------------------------------------------------------
# Teacher-forced agreement: a cheap estimate of acceptance, for eval.json
# ---------------------------------------------------------------------------

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
    if isinstance(windows, torch.Tensor):
        groups = [windows]
    else:
        by_len: dict[int, list] = defaultdict(list)
        for w in windows:
            by_len[len(w)].append(list(w))
        groups = [torch.tensor(ws, dtype=torch.long) for _, ws in sorted(by_len.items())]
    hits = [0] * (n + 1)
    count = [0] * (n + 1)
    run_sum, run_count = 0, 0
    was_training = model.training
    model.eval()
    try:
        for group in groups:
            for start in range(0, group.shape[0], batch_size):
                x = group[start:start + batch_size].to(device)
                T = x.shape[1]
                if T < 2:
                    continue
                preds = [lg.argmax(-1) for lg in model(x)]  # n tensors (B, T)
                g = preds[0]
                agree = []
                for k in range(2, n + 1):
                    if T - k + 1 <= 0:
                        break
                    a = preds[k - 1][:, :T - k + 1] == g[:, k - 1:]  # positions t = 0 .. T-k
                    hits[k] += int(a.sum())
                    count[k] += a.numel()
                    agree.append(a)
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


# ---------------------------------------------------------------------------
# Benchmark: speculative vs plain greedy decoding on a run's test prompts
# ---------------------------------------------------------------------------

def task_prompts(task, records: list[dict], enc) -> tuple[list[list[int]], int | None, int]:
    """Evaluation prompts of test records, the stop token and the answer length in tokens.

    A prompt is the end-of-text token then the encoded ``prompt`` (the example
    boundary seen in training, as the tasks' ``evaluate`` does; a task may
    override with a ``prompt_tokens(record, enc)`` method). The stop token is
    the first token of what the training document puts after the answer
    (``"\\n"`` for polyarith), else None; the length is the longest answer
    plus that stop token.

    Example:
        >>> from generators import registry
        >>> from lab.tokenizers import byte_encoding
        >>> task = registry.create("polyarith", {"test_per_op": 1})
        >>> prompts, stop, length = task_prompts(task, task.build("test", 0)[:2], byte_encoding())
        >>> stop, length, prompts[0][0]
        (10, 6, 256)
    """
    custom = getattr(task, "prompt_tokens", None)
    prompts, stop, longest = [], None, 1
    for rec in records:
        prompts.append(custom(rec, enc) if custom else [enc.eot_token] + enc.encode_ordinary(rec["prompt"]))
        answer = rec.get("answer", "")
        doc = task.document(rec)
        tail = doc[len(rec["prompt"]) + len(answer):] if doc.startswith(rec["prompt"] + answer) else ""
        if tail and stop is None:
            stop = enc.encode_ordinary(tail)[0]
        longest = max(longest, len(enc.encode_ordinary(answer)) + (1 if tail else 0))
    return prompts, stop, longest


def pick(records: list, limit: int) -> list:
    """``limit`` records spread evenly over the list (all of them if limit is 0 or larger).

    Example:
        >>> pick(list(range(10)), 3)
        [0, 3, 6]
    """
    if not limit or limit >= len(records):
        return list(records)
    step = len(records) / limit
    return [records[int(i * step)] for i in range(limit)]


def _batches(prompts: list[list[int]], batch_size: int, device) -> list[torch.Tensor]:
    by_len: dict[int, list[list[int]]] = defaultdict(list)
    for p in prompts:
        by_len[len(p)].append(p)
    return [torch.tensor(ps[i:i + batch_size], dtype=torch.long, device=device)
            for _, ps in sorted(by_len.items()) for i in range(0, len(ps), batch_size)]


@torch.no_grad()
def bench_decode(model, prompts: list[list[int]], max_new_tokens: int, *, stop_token: int | None = None,
                 batch_size: int = 1, heads: list[int] | None = None, repeats: int = 3,
                 fused: bool = True) -> dict:
    """Time plain greedy (``model.generate``) and speculative decoding with k = 1..n heads on the same prompts.

    Each method decodes every prompt ``repeats`` times (methods interleaved,
    so background load hits them alike) and keeps its fastest pass. Returns
    ``{"greedy": {...}, "k": {k: {...}}}`` with tokens/s, seconds, tokens per
    forward, per-head acceptance, speed-up and whether the output was
    identical to greedy decoding.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> r = bench_decode(m, [[1, 2, 3], [4, 5, 6]], 5, repeats=1)
        >>> sorted(r["k"]), r["k"][2]["identical"]
        ([1, 2], True)
    """
    model.eval()
    device = next(model.parameters()).device
    batches = _batches(prompts, batch_size, device)
    ks = heads or list(range(1, model.config.n + 1))
    for k in ks:
        check_heads(model, k)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def greedy_pass():
        return [model.generate(x, max_new_tokens, stop_token=stop_token) for x in batches]

    def spec_pass(k, stats):
        return [speculative_generate(model, x, max_new_tokens, heads=k, stop_token=stop_token, stats=stats,
                                     fused=fused) for x in batches]

    # warm-up (allocator, kernels), untimed
    for x in batches[:2]:
        model.generate(x, max_new_tokens, stop_token=stop_token)
        for k in ks:
            speculative_generate(model, x, max_new_tokens, heads=k, stop_token=stop_token, fused=fused)
    best = {"greedy": float("inf"), **{k: float("inf") for k in ks}}
    reference, results, stats_of = None, {}, {}
    for _ in range(max(1, repeats)):
        sync()
        t0 = time.perf_counter()
        reference = greedy_pass()
        sync()
        best["greedy"] = min(best["greedy"], time.perf_counter() - t0)
        for k in ks:
            stats = DecodeStats()
            sync()
            t0 = time.perf_counter()
            outs = spec_pass(k, stats)
            sync()
            best[k] = min(best[k], time.perf_counter() - t0)
            stats_of[k] = stats
            results[k] = all(torch.equal(a, b) for a, b in zip(outs, reference))
    tokens = sum(t.numel() for t in reference)
    greedy = {"seconds": best["greedy"], "tokens": tokens, "tokens_per_s": tokens / best["greedy"]}
    lengths = [t.shape[1] for t in reference]  # new tokens of each batch
    table = {}
    for k in ks:
        s = stats_of[k]
        table[k] = {"seconds": best[k], "tokens": s.tokens, "tokens_per_s": s.tokens / best[k],
                    "speedup": best["greedy"] / best[k], "tokens_per_forward": s.tokens_per_forward,
                    "forwards": s.forwards, "acceptance": s.acceptance(), "identical": results[k],
                    **decode_ceilings(lengths, k)}
    return {"greedy": greedy, "k": table, "prompts": len(prompts), "batches": len(batches),
            "batch_size": batch_size, "max_new_tokens": max_new_tokens, "stop_token": stop_token,
            "device": str(device), "head_kind": model.config.head_kind, "n": model.config.n}


def decode_ceilings(lengths: list[int], k: int) -> dict[str, float]:
    """What k heads could reach at best on outputs of these lengths (every draft accepted).

    A call that emits L tokens gets the first from the prefill and needs at
    least ceil((L - 1) / k) more forwards, against L forwards in all for plain
    greedy decoding. ``max_tokens_per_forward`` is the best tokens per forward
    and ``max_speedup`` the best speed-up if every forward cost the same
    (prefill included). Short outputs cap both, whatever the model or hardware.

    Example:
        >>> decode_ceilings([6], 4)    # a polyarith answer: 5 digits and end-of-text
        {'max_tokens_per_forward': 2.5, 'max_speedup': 2.0}
        >>> decode_ceilings([201], 4)
        {'max_tokens_per_forward': 4.0, 'max_speedup': 3.94}
    """
    after = sum(max(0, L - 1) for L in lengths)
    verify = sum(-(-max(0, L - 1) // k) for L in lengths)
    return {"max_tokens_per_forward": round(after / verify, 2) if verify else 1.0,
            "max_speedup": round(sum(lengths) / (len(lengths) + verify), 2) if lengths else 1.0}


def format_bench(result: dict) -> str:
    """The bench table as text, with the paper's reference numbers beside it.

    Example:
        >>> r = {"greedy": {"tokens_per_s": 100.0, "seconds": 1.0, "tokens": 100}, "n": 2, "prompts": 1,
        ...      "batch_size": 1, "max_new_tokens": 6, "head_kind": "parallel", "device": "cpu", "stop_token": 10,
        ...      "k": {2: {"tokens_per_forward": 1.5, "acceptance": {2: 0.5}, "tokens_per_s": 140.0,
        ...                "speedup": 1.4, "identical": True, "max_tokens_per_forward": 1.67, "max_speedup": 1.5}}}
        >>> print(format_bench(r).splitlines()[2])
        k  tokens/fwd  acc h2  tokens/s  speedup  identical  ceiling: tokens/fwd  speedup
    """
    n = result["n"]
    heads = list(range(2, n + 1))
    lines = [f"{result['prompts']} prompts, batch size {result['batch_size']}, up to {result['max_new_tokens']} new tokens"
             f" {'(stop at the answer end)' if result['stop_token'] is not None else '(no stop token)'}; "
             f"{result['head_kind']} heads n={n}; device {result['device']}",
             f"plain greedy (MTPModel.generate, KV cache): {result['greedy']['tokens_per_s']:,.0f} tokens/s",
             "k  tokens/fwd  " + "  ".join(f"acc h{j}" for j in heads) + "  tokens/s  speedup  identical"
             "  ceiling: tokens/fwd  speedup"]
    for k, r in result["k"].items():
        acc = "  ".join(f"{100 * r['acceptance'][j]:5.1f}%" if j in r["acceptance"] else "     - "
                        for j in heads)
        lines.append(f"{k:<2} {r['tokens_per_forward']:>10.2f}  {acc}  {r['tokens_per_s']:>8,.0f}  "
                     f"{r['speedup']:>6.2f}x  {'yes' if r['identical'] else 'NO ':<9}"
                     f"  {r['max_tokens_per_forward']:>19.2f}  {r['max_speedup']:>6.2f}x")
    lines.append("ceiling: every draft accepted and every forward equally costly (the output lengths cap it)")
    lines.append("paper (7B, n=4, code): 3.50 tokens/forward, 3.05x speed-up")
    return "\n".join(lines)
