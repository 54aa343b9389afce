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

Batches: every row advances on its own. Each row has its own cache length
(``lab.model.KVCache`` with a (B,) tensor of lengths: per-row positions for
RoPE and the cache writes, and a mask built from them, so a row never attends
to a slot it has not written or whose draft it rejected). A step runs one
block of k positions for the whole batch and each row keeps what *it*
accepted, so a batch takes as many forwards as its slowest row would alone.
A row that has met its stop token or its budget stays where it is (it keeps
nothing more) while the others go on. Prompts of different lengths share a
batch, right-padded (``lengths``; ``speculative_decode`` pads them); the
padding is overwritten as the row decodes and never attended.

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
  ``sequential_shared`` is the same with one module applied at every depth
  (its own KV-cache slot per depth).

Tokens per forward: the prefill emits a row's first token; every forward after
it emits 1 + (accepted drafts) tokens in each row still decoding, so
``tokens_per_forward = (tokens - 1) / forwards after the prefill`` per row,
summed over rows on both sides (the prefill and its one token are left out;
plain greedy decoding scores exactly 1.0). Sequential heads also
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
from typing import Callable

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

    ``forwards``: model forwards after the prefill (verification steps, one
    per step for the whole batch); ``row_forwards``: the same counted once
    per row still decoding in it; ``advanced``: tokens those forwards emitted,
    summed over rows (the first token of each row comes from the prefill and
    is not counted); ``tokens``: all emitted tokens over all rows, each row up
    to its stop token; ``drafted[j]``/``accepted[j]``: how often head j's
    draft was verified (every earlier draft of the block having been accepted
    by that row) and how often it was accepted.

    Example:
        >>> s = DecodeStats(forwards=4, row_forwards=4, advanced=10)
        >>> s.tokens_per_forward
        2.5
        >>> s.drafted[2], s.accepted[2] = 4, 3
        >>> s.acceptance()
        {2: 0.75}
    """

    forwards: int = 0
    row_forwards: int = 0
    advanced: int = 0
    tokens: int = 0
    prefills: int = 0
    drafted: dict = field(default_factory=lambda: defaultdict(int))
    accepted: dict = field(default_factory=lambda: defaultdict(int))
    # Set ``clock`` (e.g. time.perf_counter, after a device sync on a GPU) to time the loop's parts: ``seconds``
    # then sums the prefill, the verification forwards, the drafting (engine.accept: the drafts of the next
    # block, and for sequential heads their module passes) and the whole loop (``lab.bench_decode``'s breakdown).
    clock: Callable[[], float] | None = None
    seconds: dict = field(default_factory=lambda: defaultdict(float))

    @property
    def tokens_per_forward(self) -> float:
        """Tokens a row emits per forward after the prefill (1.0 for plain greedy decoding)."""
        return self.advanced / self.row_forwards if self.row_forwards else 1.0

    def acceptance(self) -> dict[int, float]:
        """Per draft head j >= 2: accepted / verified, given the earlier drafts were accepted."""
        return {j: self.accepted[j] / self.drafted[j] for j in sorted(self.drafted) if self.drafted[j]}


# ---------------------------------------------------------------------------
# Engines: run blocks of tokens through trunk + heads with a KV cache
# ---------------------------------------------------------------------------
#
# An engine has accepted ``length`` positions in each row: 0 before the
# prefill, then a (B,) tensor (rows accept different numbers of drafts, and
# prompts of one batch may differ in length). forward(block) runs the block
# (B, T) at positions length[b] .. length[b]+T-1 of each row and returns head
# 1's argmax at each of them (B, T); accept(n, nxt) keeps the first n[b] of
# those positions in row b (length += n; n[b] = 0 leaves a finished row where
# it is), given head 1's token after them (nxt, (B,)), and returns the drafts
# of heads 2..k at each row's last kept position (B, k-1). Positions a row ran
# but did not keep stay in its cache until it writes them again; the cache's
# per-row mask (lab.model.KVCache.rows) never lets a row attend to them.

class _Engine:
    def __init__(self, model, batch: int, max_len: int, k: int):
        self.model, self.k, self.batch = model, k, batch
        self.length: int | torch.Tensor = 0  # positions accepted per row: the next forward runs from here
        p = model.lm_head.weight
        self.device, self.dtype = p.device, p.dtype
        self.rows = torch.arange(batch, device=self.device)

    def _no_drafts(self):
        return torch.empty(self.batch, 0, dtype=torch.long, device=self.device)

    def _seek_length(self):
        """Where the caches write next: the (B,) lengths, or an int when all rows agree (one row: no per-row mask)."""
        if isinstance(self.length, torch.Tensor) and self.batch == 1:
            return int(self.length)
        return self.length

    def _advance(self, n):
        """length += n (an int: every row; or (B,)); returns each row's last kept position in the block (B,)."""
        n = torch.as_tensor(n, device=self.device).expand(self.batch)
        self.length = self.length + n
        return (n - 1).clamp(min=0)  # a row that kept nothing (finished) reads position 0: its drafts are unused


class _GenericEngine(_Engine):
    """Any head kind but sequential, through the model's own modules."""

    def __init__(self, model, batch, max_len, k):
        super().__init__(model, batch, max_len, k)
        self.cache = model.new_cache(batch, max_len)

    def forward(self, block):
        m = self.model
        self.cache.seek(self._seek_length())
        h = m.trunk_forward(block, self.cache)
        # every head runs at every position: the heads' own caches must stay complete
        self.zs = m.head_states(h, None, upto=self.k, cache=self.cache)
        return m.logits(self.zs[0]).argmax(-1)

    def accept(self, n, nxt):
        last = self._advance(n)
        if self.k == 1:
            return self._no_drafts()
        z = torch.stack([z[self.rows, last] for z in self.zs[1:]])  # (k-1, B, d): heads 2..k, last kept position
        return self.model.logits(z).argmax(-1).T


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
    key = (k, tuple((id(p), p.data_ptr(), 0 if p.is_inference() else p._version) for p in params))
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
            length = self._seek_length()
            # the stacked heads' rows are head 1's B rows, then head 2's, ...: each row's length k times
            self.heads_cache.seek(length.repeat(self.k) if isinstance(length, torch.Tensor) else length)
        return self.heads(h, self.model.rope, self.heads_cache)

    def forward(self, block):
        self.cache.seek(self._seek_length())
        self.zs = self.head_states(self.model.trunk_forward(block, self.cache))
        return self.model.logits(self.zs[0]).argmax(-1)

    def accept(self, n, nxt):
        last = self._advance(n)
        if self.k == 1:
            return self._no_drafts()
        return self.model.logits(self.zs[1:, self.rows, last]).argmax(-1).T


class _SequentialEngine(_Engine):
    """DeepSeek-V3 modules: module j reads z_{j-1} and the token at offset j-1, drafted if not known.

    State after ``accept``, per row b: ``seq[b, :length[b]]`` are the
    processed tokens and ``seq[b, length[b]]`` is x[length] (head 1's next
    token), followed by the drafts; the first ``exact[j, b]`` positions of
    module j's cache (and of ``z[j]``) are exact: those p with x[p+j-1]
    known, i.e. p <= length-j+1. Each step recomputes module j over one window
    of W_j positions per row, ending at the row's length (W_j = the most any
    row needs, so a row may recompute a few exact positions again, with the
    same result), reading drafts d_2..d_{j-1} beyond x[length]. A row whose
    window would start before position 0 starts at 0 instead and runs past its
    length: those extra positions are junk in slots it never attends and
    rewrites later.
    """

    def __init__(self, model, batch, max_len, k):
        super().__init__(model, batch, max_len, k)
        self.cache = model.new_cache(batch, max_len)
        d = model.config.d_model
        room = max_len + k  # a block or a window may run up to k positions past max_len's last accepted one
        self.seq = torch.zeros(batch, room, dtype=torch.long, device=self.device)
        self.z = [None] + [torch.zeros(batch, room, d, device=self.device, dtype=self.dtype)
                           for _ in range(1, k)]  # z[j]: states of module j (1-based), j < k
        self.exact = torch.zeros(k + 1, batch, dtype=torch.long, device=self.device)  # exact[j]: per row
        self.offsets = torch.arange(room, device=self.device)  # 0, 1, ...: sliced by _put and _window (no new tensor)

    def forward(self, block):
        m = self.model
        self.cache.seek(self._seek_length())
        h = m.trunk_forward(block, self.cache)
        self.block, self.z1 = block, m.heads[0](m.head_input(0, h), m.rope, self.cache)
        return m.logits(self.z1).argmax(-1)

    def _put(self, buf, start, values):
        """buf[b, start[b] + i] = values[b, i] (a scatter along dim 1): buf (B, room[, d]), values (B, T[, d])."""
        index = start[:, None] + self.offsets[:values.shape[1]]  # (B, T)
        index = index.view(*index.shape, *[1] * (values.dim() - 2)).expand_as(values)
        buf.scatter_(1, index, values)

    def _window(self, buf, start, width):
        """buf[b, start[b] : start[b] + width] for every row b: (B, width[, d])."""
        index = start[:, None] + self.offsets[:width]  # (B, width)
        return buf[self.rows[:, None], index]

    def accept(self, n, nxt):
        m = self.model
        start = torch.as_tensor(self.length, device=self.device).expand(self.batch)
        self._advance(n)
        end = self.length  # (B,)
        # the whole block goes in (positions past a row's end are overwritten before they count)
        self._put(self.seq, start, self.block)
        self._put(self.seq, end, nxt[:, None])  # x[end]: head 1's greedy token
        if self.k == 1:
            self.cache.seek(end)
            return self._no_drafts()
        self._put(self.z[1], start, self.z1)
        widths = (end - self.exact[2:]).amax(dim=1).clamp(min=1).tolist()  # W_j for j = 2..k (one sync)
        drafts = []
        for j, width in zip(range(2, self.k + 1), widths):
            redo = (end - width).clamp(min=0)  # (B,): module j's window redo .. redo+width-1 covers exact[j]..end-1
            self.cache.seek(redo)  # module j's slot: rewrite the window
            emb = m.tok_emb(self._window(self.seq, redo + j - 1, width))  # x[p+j-1] at each window position p
            zj = m.heads[j - 1](self._window(self.z[j - 1], redo, width), emb, m.rope, self.cache,
                                slot=m.head_slot(j - 1))
            if j < self.k:
                self._put(self.z[j], redo, zj)
            draft = m.logits(zj[self.rows, end - 1 - redo]).argmax(-1)  # at each row's last accepted position
            drafts.append(draft)
            self._put(self.seq, end + j - 1, draft[:, None])  # x[end+j-1], read by the later modules
            self.exact[j] = (end - j + 2).clamp(min=0)
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
             stats: DecodeStats | None = None, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The blockwise draft-verify-accept loop on an engine (see the module docstring), each row on its own.

    ``idx`` (B, T) holds the prompts, right-padded when ``lengths`` (B,) gives
    their lengths. Every row keeps the drafts that *it* accepted (its own
    cache length), so a batch needs as many forwards as its slowest row alone,
    not more. A row stops after its first ``stop_token`` (kept) or after
    ``max_new_tokens`` tokens, and stays stopped: it accepts nothing more and
    its later columns are ``stop_token``. Returns the new tokens (B, <=
    max_new_tokens), as wide as the longest row: row b is ``MTPModel.generate``'s
    row b up to its first stop token (which is where ``lab.decode.run_batched``
    cuts both).

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> x = torch.tensor([[1, 2, 3]])
        >>> run_loop(make_engine(m, 1, 3 + 5 + 2, 2), x, 5).shape
        torch.Size([1, 5])
    """
    batch, width = idx.shape
    k, device = engine.k, idx.device
    stats = stats if stats is not None else DecodeStats()
    rows = torch.arange(batch, device=device)
    lengths = torch.full((batch,), width, device=device) if lengths is None else lengths.to(device)
    stats.prefills += 1
    clock = stats.clock or (lambda: 0.0)  # not timed: every part counts 0 s
    start = clock()
    nxt = engine.forward(idx)[rows, lengths - 1]  # (B,): head 1 after each prompt's last token
    stats.seconds["prefill"] += clock() - start
    # The bookkeeping is on the host, in Python ints: per step it reads the block and head 1's tokens once
    # (the loop's one sync) and hands the engine two small tensors back. A row's dozen tensor ops would cost
    # more than a small model's layer on a CPU, and a GPU needs the sync anyway to size the next block.
    out = [[t] for t in nxt.tolist()]  # each row's emitted tokens
    done = [r[0] == stop_token for r in out]  # a row that has met its stop token (none: never)
    advance = lengths  # positions each row keeps of what the engine ran last (the prompt, then its block)
    while True:
        left = [0 if d else max_new_tokens - len(o) for o, d in zip(out, done)]  # tokens each row may still emit
        need = max(left)
        if need <= 0:
            break
        t0 = clock()
        drafts = engine.accept(advance, nxt)  # (B, k-1) at each row's last kept position
        t1 = clock()
        size = min(k, need)  # one block for all rows: never past the longest budget
        block = torch.cat([nxt[:, None], drafts[:, :size - 1]], dim=1)
        t2 = clock()
        greedy = engine.forward(block)  # (B, size): head 1's token after each block token
        stats.seconds["draft"] += t1 - t0
        stats.forwards += 1
        both = torch.stack([block, greedy]).tolist()  # the step's one sync
        stats.seconds["verify"] += clock() - t2
        take = []
        for r, (ran, verified) in enumerate(zip(*both)):  # row r's block (x, drafts) and head 1 after each
            # row r accepts its drafts up to the first one head 1 disagrees with; the accepted drafts ARE
            # head 1's tokens, so its new tokens are verified[:agreed + 1] (the drafts and the bonus), cut to
            # its budget and after its first stop token
            agreed = 0
            while agreed < size - 1 and ran[agreed + 1] == verified[agreed]:
                agreed += 1
            new = verified[:min(agreed + 1, left[r])]
            if stop_token in new:
                new, done[r] = new[:new.index(stop_token) + 1], True
            out[r] += new
            take.append(len(new))
            budget = min(left[r], size) - 1  # the row's drafts within its budget (-1: it had finished)
            if budget >= 0:
                stats.row_forwards += 1
            for i in range(min(budget, agreed + 1)):  # head i+2's draft was verified: the i before it accepted
                stats.drafted[i + 2] += 1
                stats.accepted[i + 2] += int(i < agreed)
        advance = torch.tensor(take, device=device)
        nxt = greedy[rows, (advance - 1).clamp(min=0)]  # head 1 after each row's last kept position (finished: unused)
    wide = max(len(o) for o in out)  # rows that stopped early are padded with the stop token (none: all full)
    result = torch.tensor([o + [stop_token] * (wide - len(o)) for o in out], dtype=idx.dtype, device=device)
    stats.advanced += sum(len(o) for o in out) - batch
    stats.tokens += sum(len(o) for o in out)
    stats.seconds["loop"] += clock() - start
    return result


@torch.inference_mode()
def speculative_generate(model, idx: torch.Tensor, max_new_tokens: int, *, heads: int | None = None,
                         stop_token: int | None = None, stats: DecodeStats | None = None,
                         fused: bool = True, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy decoding with k = ``heads`` heads drafting: each row's output is ``model.generate``'s.

    idx (B, T) -> new tokens (B, <= max_new_tokens). Rows advance on their
    own (:func:`run_loop`): a row stops at its first ``stop_token`` and its
    later columns are ``stop_token`` (:func:`pad_after_stop` of
    ``model.generate``'s output, which goes on decoding stopped rows).
    ``lengths`` (B,): prompt lengths when ``idx`` is right-padded (prompts
    of different lengths in one batch). ``stats`` (a :class:`DecodeStats`)
    accumulates forwards and acceptance. ``heads=1`` is plain greedy decoding
    through the same loop.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> torch.manual_seed(1) and None
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, head_kind="sequential",
        ...                          vocab_size=20).resolved()).eval()
        >>> x = torch.randint(0, 20, (3, 4))
        >>> out = speculative_generate(m, x, 9, stop_token=5)
        >>> torch.equal(out, pad_after_stop(m.generate(x, 9, stop_token=5), 5))
        True
    """
    k = check_heads(model, heads)
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise UserError("speculative_generate needs a (batch, length) tensor with a non-empty prompt")
    B, T = idx.shape
    if lengths is not None:
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=idx.device)
        if lengths.shape != (B,) or bool((lengths < 1).any()) or bool((lengths > T).any()):
            raise UserError(f"lengths must be {B} prompt lengths in 1..{T} (one per row of the padded prompts)")
    if max_new_tokens < 1:
        return idx.new_zeros(B, 0)
    was_training = model.training
    if was_training:
        model.eval()
    try:
        engine = make_engine(model, B, T + max_new_tokens + k, k, fused=fused)
        return run_loop(engine, idx, max_new_tokens, stop_token, stats, lengths)
    finally:
        if was_training:
            model.train()


def pad_after_stop(tokens: torch.Tensor, stop_token: int | None) -> torch.Tensor:
    """Each row's tokens after its first ``stop_token`` replaced by ``stop_token``: a stopped row stays stopped.

    What :func:`speculative_generate` returns, made from ``MTPModel.generate``'s
    output (which decodes a stopped row on until every row has stopped).

    Example:
        >>> pad_after_stop(torch.tensor([[1, 9, 2, 3], [4, 5, 6, 9]]), 9).tolist()
        [[1, 9, 9, 9], [4, 5, 6, 9]]
    """
    if stop_token is None:
        return tokens
    after = (tokens == stop_token).long().cummax(dim=1).values.roll(1, dims=1)  # 1 from the column after a stop
    after[:, 0] = 0
    return tokens.masked_fill(after.bool(), stop_token)


@torch.inference_mode()
def speculative_decode(model, prompts: list[list[int]], max_new_tokens: int, *, heads: int | None = None,
                       stop_token: int | None = None, batch_size: int = 64, stats: DecodeStats | None = None,
                       fused: bool = True) -> list[list[int]]:
    """Speculative decoding of token lists, batched with prompts of different lengths together.

    Same contract as ``lab.decode.greedy_generate``: the new tokens of each
    prompt in input order, cut after ``stop_token`` (kept) or after
    ``max_new_tokens``. The prompts are sorted by length and right-padded
    (``lab.decode.padded_batches``): each row has its own cache length.

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
                       device=next(model.parameters()).device, padded=True)


@torch.inference_mode()
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
