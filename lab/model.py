"""The multi-token-prediction transformer, in one module, in data-flow order.

    tokens (B, T) --tok_emb--> (B, T, d) --trunk: L_trunk Blocks--> h (B, T, d)
      h --head 1--> z_1 (B, T, d) --norm_f--> --lm_head--> logits_1 (B, T, V)  predicts x[t+1]
      h --head 2--> z_2 ...                                 logits_2            predicts x[t+2]
      ...                                                                       ...
      h --head n--> z_n ...                                 logits_n            predicts x[t+n]

The final norm and the unembedding (``lm_head``) are shared by all heads
(Gloeckle et al. 2024, Fig. 1); the embedding is NOT tied to the unembedding.
How a head turns h into z_i is the head kind:

    parallel    z_i = Block_i(h)                       (paper default)
    linear      z_i = W_i h                            (a d x d map, no nonlinearity)
    causal      z_i = Block_i(z_{i-1}),  z_0 = h        (a stack: head i sees head i-1)
    anticausal  z_i = Block_i(z_{i+1}),  z_{n+1} = h    (farthest head first)
    sequential  z_1 = Block_1(h);  z_k = Block_k(W_k [norm(z_{k-1}); norm(emb(x[t+k-1]))])
                (DeepSeek-V3: module k also sees the TRUE token t+k-1, teacher forcing)
    sequential_shared  as sequential, ONE module W, Block for every k >= 2 (GLM, Nemotron)

What the heads read from the trunk is ``ModelConfig.head_input``: "last"
(above: h, the last trunk layer's output) or "weighted" (weighted hidden
states, Mehra et al. 2025): the trunk then returns all its hidden states
H = [emb, block_1 out, ..., block_L out] stacked as (L+1, B, T, d), and a
head that reads the trunk reads its own learned mix sum_l softmax(a)_l H_l
(B, T, d) instead of h = H_L, reaching information from before the last
layers specialize for the next token (``MTPModel.head_input``). Parallel and
linear heads each have a mix; the chained kinds (causal, anticausal,
sequential) have one, for the one head that reads the trunk (head 1; head n
for anticausal), the others reading the head before them as above.

The blocks are pre-norm (bias-free LayerNorm), attention is causal through
``F.scaled_dot_product_attention`` with rotary position embeddings (RoPE,
relative, so a packed training window and a decoding prompt at position 0
look alike), MLP is GELU with hidden size 4d: 12 d^2 parameters per block,
which is where the size names (1M ... 1B non-embedding parameters) come from.

The memory-efficient MTP backward lives in ``lab.loss``; this module only
defines the forward pieces it calls (``trunk_forward``, ``head_states``,
``logits``). ``StackedHeads`` runs parallel or linear heads as one batched
op, for self-speculative decoding (``lab.speculative``).

Example:
    >>> import torch
    >>> from lab.config import SEQUENTIAL_KINDS, ModelConfig
    >>> cfg = ModelConfig(size="custom", d_model=32, layers=3, n_heads=2, n=2, vocab_size=64).resolved()
    >>> model = MTPModel(cfg)
    >>> logits = model(torch.zeros(2, 5, dtype=torch.long))  # one (B, T, V) tensor per head
    >>> len(logits), tuple(logits[0].shape)
    (2, (2, 5, 64))
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.config import SEQUENTIAL_KINDS, ModelConfig

# Weighted hidden states start with this share of the mix on the last trunk layer (the rest spread evenly
# over the earlier states): close to the "last" model, while the softmax is not so saturated that the
# other states' logits cannot move within a short run (Adam moves a logit by about lr per step; ~2 logits
# in a 2000-step run at lr 1e-3 take a state from 0.25% to ~12% at 4 trunk layers).
WHS_INIT_LAST = 0.99


def whs_init_logits(states: int) -> torch.Tensor:
    """Mixing logits over ``states`` hidden states, softmax = WHS_INIT_LAST on the last one, the rest even.

    Example:
        >>> [round(w, 4) for w in whs_init_logits(5).softmax(0).tolist()], whs_init_logits(1).tolist()
        ([0.0025, 0.0025, 0.0025, 0.0025, 0.99], [0.0])
    """
    logits = torch.zeros(states)
    if states > 1:  # e^c / (e^c + (states - 1)) = WHS_INIT_LAST
        logits[-1] = math.log(WHS_INIT_LAST * (states - 1) / (1 - WHS_INIT_LAST))
    return logits


class Norm(nn.Module):
    """LayerNorm with a gain and no bias (as nanoGPT).

    Chosen over RMSNorm for speed: torch's fused LayerNorm kernel is ~3x
    faster than ``F.rms_norm`` on CPU (forward + backward), equal on GPU.
    """

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.weight, None, self.eps)


class Rotary(nn.Module):
    """Rotary position embedding as complex rotations, tables grown on demand.

    ``forward(start, length)`` returns the unit complex numbers e^{i pos theta_j}
    of shape (length, head_dim / 2) for absolute positions start ..
    start+length-1 (decoding with a KV cache starts past 0).
    """

    def __init__(self, head_dim: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._table = None

    def forward(self, start: int, length: int, device):
        end = start + length
        if self._table is None or self._table.shape[0] < end or self._table.device != device:
            n = max(end, 2 * (self._table.shape[0] if self._table is not None else 256))
            with torch.inference_mode(False):  # grown while decoding, the table must still serve training
                angles = torch.outer(torch.arange(n, device=device, dtype=torch.float32), self.inv_freq.to(device))
                self._table = torch.polar(torch.ones_like(angles), angles)  # (n, hd/2) complex64
        return self._table[start:end]


def apply_rotary(x, rot):
    """Rotate consecutive pairs (x_2j, x_2j+1) of x (B, T, H, hd) by rot (T, hd/2), or (B, T, hd/2) per row.

    Applied before the heads are moved in front of T, so the pairs are a view
    of the qkv projection (no copy).
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (B, T, H, hd/2)
    return torch.view_as_real(pairs * rot.unsqueeze(-2)).flatten(-2).to(x.dtype)  # rot broadcast over heads


def document_mask(idx, eot: int):
    """Causal attention within documents: idx (B, T) -> a (B, 1, T, T) bool mask, True = may attend.

    A packed training window holds several documents, each starting with the
    end-of-text token ``eot``. Query t may attend to key s <= t only when no
    document starts in (s, t]: each document then sees only itself, as a
    prompt does at evaluation (RoPE is relative, so a document attended alone
    looks the same wherever it sits in the window). Tokens before the
    window's first ``eot`` (the tail of a cut document) form one document.

    Example:
        >>> document_mask(torch.tensor([[5, 0, 7, 0]]), eot=0)[0, 0].int().tolist()
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]]
    """
    doc = (idx == eot).cumsum(1)  # (B, T): document number of each position
    T = idx.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]  # (B, 1, T, T), broadcast over heads


class KVCache:
    """Keys and values of every attention layer, for incremental decoding.

    One slot per Block (trunk and head blocks), preallocated to ``max_len``
    positions. A forward writes its T positions from ``length`` on and leaves
    ``length`` where it was; ``seek(length)`` then moves it: forward past the
    positions to keep, or back (speculative decoding rejects drafted tokens
    that way).

    ``length`` is an int (every row has filled the same positions: plain
    slices, the causal mask) or a (B,) tensor of per-row fill lengths (batched
    speculative decoding, where each row accepts its own number of drafts,
    and prompts of different lengths in one batch). Then row b writes its T
    new positions at length[b] .. length[b]+T-1 (a scatter) and its query at
    position p sees only the key slots 0..p (:meth:`rows`): slots past a
    row's length hold rejected drafts or another row's padding until that row
    writes them again, and are never attended.

    Example:
        >>> c = KVCache(1, 2, 1, 2, 8, "cpu", torch.float32)
        >>> c.seek(torch.tensor([1, 3]))
        >>> pos, mask, end = c.rows(2)
        >>> pos.tolist(), mask[0, 0].int().tolist(), end
        ([[1, 2], [3, 4]], [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], 5)
    """

    def __init__(self, n_blocks: int, batch: int, n_heads: int, head_dim: int, max_len: int, device, dtype):
        shape = (batch, n_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_blocks)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_blocks)]
        self.length: int | torch.Tensor = 0  # positions filled (same for every block after a forward)
        self.max_len = max_len
        self._rows = None  # per-row lengths: (T, positions, mask, end) of the last rows(T), until the next seek
        self._mask = None  # int length: the causal mask of the last block_mask(T), until the next seek

    def rows(self, T: int):
        """Per-row lengths: positions (B, T) of T new tokens, the mask (B, 1, T, end) of the slots they see, end.

        ``end`` = max(length) + T slots are attended (the longest row's);
        query i of row b is at position length[b] + i and may see slot s iff
        s <= length[b] + i. Built once per seek and T, shared by every layer.
        """
        if self._rows is None or self._rows[0] != T:
            length = self.length
            end = self._max + T
            if end > self.max_len:
                raise ValueError(f"KV cache full: {end} > {self.max_len} positions")
            pos = length[:, None] + torch.arange(T, device=length.device)  # (B, T)
            mask = torch.arange(end, device=length.device) <= pos[:, :, None]  # (B, T, end), True = may attend
            self._rows = (T, pos, mask[:, None], end)  # the mask broadcast over heads
        return self._rows[1:]

    def block_mask(self, T: int, device):
        """The (T, length + T) causal mask of T new queries at positions length.. (int length), built once per seek.

        Example:
            >>> c = KVCache(1, 1, 1, 2, 8, "cpu", torch.float32)
            >>> c.seek(2)
            >>> c.block_mask(2, "cpu").int().tolist()
            [[1, 1, 1, 0], [1, 1, 1, 1]]
        """
        if self._mask is None or self._mask.shape[0] != T:
            self._mask = torch.ones(T, self.length + T, dtype=torch.bool, device=device).tril(diagonal=self.length)
        return self._mask

    def update(self, slot: int, k, v):
        """Write k, v (B, H, T, hd) at positions length..length+T (per row); return all slots so far."""
        T = k.shape[2]
        if isinstance(self.length, torch.Tensor):
            pos, _, end = self.rows(T)
            index = pos[:, None, :, None].expand_as(k)  # (B, H, T, hd): row b's slots length[b]..
            self.k[slot].scatter_(2, index, k)
            self.v[slot].scatter_(2, index, v)
            return self.k[slot][:, :, :end], self.v[slot][:, :, :end]
        end = self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} > {self.max_len} positions")
        self.k[slot][:, :, self.length:end] = k
        self.v[slot][:, :, self.length:end] = v
        return self.k[slot][:, :, :end], self.v[slot][:, :, :end]

    def seek(self, length: int | torch.Tensor):
        """The next forward writes from position ``length`` on: the first ``length`` positions are kept.

        ``length`` an int (all rows) or a (B,) long tensor (each row its own).
        Rows that all have the same length (one row, say) take the int path:
        plain slices and the causal mask, the same attention as the per-row
        mask, without its cost.
        """
        self._rows = self._mask = None
        if isinstance(length, torch.Tensor):
            # the longest row bounds the slots attended (one sync per seek)
            low, self._max = torch.stack(length.aminmax()).tolist() if length.numel() > 1 else [int(length)] * 2
            if low == self._max:
                length = low
        self.length = length


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.proj.residual = True  # scaled init, see MTPModel._init_weights

    def forward(self, x, rope, cache: KVCache | None = None, slot: int = 0, attn_mask=None):
        """x (B, T, d) -> (B, T, d); ``attn_mask`` (B, 1, T, T) bool replaces the causal mask (training only)."""
        B, T, d = x.shape
        # (B, T, 3d) -> three (B, T, H, hd); rotate q and k; then (B, H, T, hd) for attention
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)
        past = cache.length if cache is not None else 0
        rows = isinstance(past, torch.Tensor)  # per-row cache lengths (B,): each row at its own positions
        if rows:
            pos, mask, end = cache.rows(T)  # (B, T) positions; (B, 1, T, end) the slots each query may see
            rot = rope(0, end, x.device)[pos]  # (B, T, hd/2): each row's own positions
        else:
            rot = rope(past, T, x.device)
        q, k, v = (t.transpose(1, 2) for t in (apply_rotary(q, rot), apply_rotary(k, rot), v))
        if cache is not None:
            k, v = cache.update(slot, k, v)  # (B, H, past + T, hd); per row: (B, H, max(past) + T, hd)
        if attn_mask is not None:  # a full-window mask from document_mask (no cache)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        elif rows:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v)  # one new query sees all cached keys
        else:  # T new queries at positions past..past+T-1: query i sees keys 0..past+i (one mask for every layer)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=cache.block_mask(T, x.device))
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.down = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)
        self.down.residual = True

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm transformer layer: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, slot: int):
        super().__init__()
        self.slot = slot  # this block's KV-cache slot
        self.norm1, self.attn = Norm(cfg.d_model), CausalSelfAttention(cfg)
        self.norm2, self.mlp = Norm(cfg.d_model), MLP(cfg)

    def forward(self, x, rope, cache=None, attn_mask=None, slot: int | None = None):
        # slot: the KV-cache slot, this block's own unless given (a shared module has one per depth)
        x = x + self.attn(self.norm1(x), rope, cache, self.slot if slot is None else slot, attn_mask)
        return x + self.mlp(self.norm2(x))


class SequentialHead(nn.Module):
    """DeepSeek-V3 MTP module k >= 2: [norm(z_{k-1}); norm(emb(x[t+k-1]))] -> 2d->d -> Block."""

    def __init__(self, cfg: ModelConfig, slot: int):
        super().__init__()
        self.norm_h, self.norm_e = Norm(cfg.d_model), Norm(cfg.d_model)
        self.merge = nn.Linear(2 * cfg.d_model, cfg.d_model, bias=False)
        self.block = Block(cfg, slot)

    def forward(self, z_prev, emb_next, rope, cache=None, attn_mask=None, slot: int | None = None):
        return self.block(self.merge(torch.cat([self.norm_h(z_prev), self.norm_e(emb_next)], dim=-1)), rope, cache,
                          attn_mask, slot)


class StackedLinear(nn.Module):
    """k bias-free Linear layers as one ``torch.bmm``: row block i of x goes through layer i.

    x (k*B, T, in) -> (k*B, T, out), or (k, B, T, in) -> (k, B, T, out). The
    layers' weights are copied, stacked as (k, in, out).
    """

    def __init__(self, linears):
        super().__init__()
        self.register_buffer("weight", torch.stack([lin.weight.detach().t() for lin in linears]), persistent=False)

    def forward(self, x):
        k, d_in = self.weight.shape[:2]
        return torch.bmm(x.reshape(k, -1, d_in), self.weight).view(*x.shape[:-1], -1)


class StackedNorm(nn.Module):
    """k Norms, each applied by its own forward to its row block of x (k*B, T, d); copies of the given ones."""

    def __init__(self, norms):
        super().__init__()
        self.norms = nn.ModuleList(copy.deepcopy(norm).requires_grad_(False) for norm in norms)

    def forward(self, x):
        xs = x.view(len(self.norms), -1, *x.shape[1:])
        return torch.stack([norm(xs[i]) for i, norm in enumerate(self.norms)]).view(x.shape)


class StackedHeads(nn.Module):
    """k parallel or linear heads run as one, for decoding: h (B, T, d) -> z_1..z_k as (k, B, T, d).

    Parallel and linear heads all read the trunk output h, so k of them can
    run as one batched op: every weight matrix stacked over the heads for
    ``torch.bmm`` (:class:`StackedLinear`), the heads' rows one after the
    other in the batch dimension (k*B rows). Parallel heads become one
    pre-norm layer whose attention and MLP are a CausalSelfAttention and an
    MLP with stacked linear layers; its KV cache (``new_cache``) has one slot
    of batch k*B. The weights are copies: build it again after they change
    (``lab.speculative`` checks it against the model's heads when it does).

    With weighted hidden states (``head_input="weighted"``) the input is the
    trunk's stacked states H (L+1, B, T, d) and ``mix`` the heads' mixing
    logits (``model.head_mix[:k]``): head i's rows read its own mix of H, all
    k mixes as one einsum. Without ``mix`` such heads are refused (they would
    read the wrong input).

    Example:
        >>> cfg = ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved()
        >>> model = MTPModel(cfg)
        >>> h = torch.randn(1, 4, 16)
        >>> z = StackedHeads(cfg, model.heads)(h, model.rope)
        >>> z.shape, torch.allclose(z[1], model.heads[1](h, model.rope), atol=1e-6)
        (torch.Size([2, 1, 4, 16]), True)
    """

    def __init__(self, cfg: ModelConfig, heads, mix=None):
        super().__init__()
        heads = list(heads)
        self.kind, self.k = cfg.head_kind, len(heads)
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        # the heads' mixing weights (softmax of their logits), (k, L+1); None: every head reads h
        self.register_buffer("mix", None, persistent=False)
        if cfg.head_input == "weighted":
            mix = list(mix) if mix is not None else []
            if len(mix) != self.k:
                raise ValueError(f"weighted hidden states: StackedHeads needs the {self.k} heads' mixing logits "
                                 f"(mix=model.head_mix[:{self.k}]), got {len(mix)}")
            self.mix = torch.stack([a.detach().softmax(0) for a in mix])
        if self.kind == "linear":
            self.linear = StackedLinear(heads)
            return
        if self.kind != "parallel":
            raise ValueError(f"{self.kind} heads do not all read the trunk output: they cannot be stacked")
        self.norm1, self.norm2 = StackedNorm(b.norm1 for b in heads), StackedNorm(b.norm2 for b in heads)
        with torch.device("meta"):  # the layers' code without weights; the linear layers are set just below
            self.attn, self.mlp = CausalSelfAttention(cfg), MLP(cfg)
        self.attn.qkv, self.attn.proj = StackedLinear([b.attn.qkv for b in heads]), StackedLinear([b.attn.proj for b in heads])
        self.mlp.up, self.mlp.down = StackedLinear([b.mlp.up for b in heads]), StackedLinear([b.mlp.down for b in heads])
        unset = [name for name, t in [*self.named_parameters(), *self.named_buffers()] if t.is_meta]
        if unset:
            raise ValueError(f"StackedHeads does not stack {', '.join(unset)}: add it there")

    def new_cache(self, batch: int, max_len: int) -> KVCache | None:
        """A KV cache for ``batch`` rows of h (None for linear heads: they do not attend)."""
        if self.kind == "linear":
            return None
        w = self.attn.qkv.weight
        return KVCache(1, self.k * batch, self.n_heads, self.head_dim, max_len, w.device, w.dtype)

    def forward(self, h, rope, cache: KVCache | None = None):
        """h (B, T, d), or the stacked states H (L+1, B, T, d) for weighted hidden states -> (k, B, T, d)."""
        k, (B, T, d) = self.k, h.shape[-3:]
        if self.mix is None:
            x = h.expand(k, B, T, d)  # every head reads h
        else:
            x = torch.einsum("kl,lbtd->kbtd", self.mix.to(h.dtype), h)  # head i reads sum_l mix[i, l] H_l
        if self.kind == "linear":
            return self.linear(x)
        x = x.reshape(k * B, T, d)
        x = x + self.attn(self.norm1(x), rope, cache, 0)
        x = x + self.mlp(self.norm2(x))
        return x.view(k, B, T, d)


class MTPModel(nn.Module):
    """Shared trunk, n heads of one kind, shared final norm + unembedding."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.vocab_size:
            raise ValueError("ModelConfig.vocab_size must be set (the lab sets it from the task's tokenizer)")
        self.config = cfg
        d, kind = cfg.d_model, cfg.head_kind
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.rope = Rotary(d // cfg.n_heads, cfg.rope_base)
        self.trunk = nn.ModuleList(Block(cfg, slot=i) for i in range(cfg.trunk_layers))
        slot = cfg.trunk_layers
        if kind == "linear":
            self.heads = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(cfg.n))
        elif kind == "sequential":
            self.heads = nn.ModuleList([Block(cfg, slot)] + [SequentialHead(cfg, slot + i) for i in range(1, cfg.n)])
        elif kind == "sequential_shared":
            # ONE module for depths 2..n: heads[1:] are the same object, so its parameters are counted, decayed
            # and updated once and its gradient sums over the depths; each depth keeps its own KV-cache slot
            # (head_slot). A model trained with n heads can draft at any depth.
            shared = [SequentialHead(cfg, slot + 1)] if cfg.n > 1 else []
            self.heads = nn.ModuleList([Block(cfg, slot)] + shared * (cfg.n - 1))
        else:  # parallel, causal, anticausal: one Block per head
            self.heads = nn.ModuleList(Block(cfg, slot + i) for i in range(cfg.n))
        self.n_blocks = slot + (0 if kind == "linear" else cfg.n)
        if cfg.head_input == "weighted":
            # Weighted hidden states: one logit vector over the L+1 hidden states per head that reads the
            # trunk (every head if parallel or linear, else the one at the start of the chain). 1-D, so
            # no weight decay (lab.train decays matrices only).
            readers = cfg.n if kind in ("parallel", "linear") else 1
            self.head_mix = nn.ParameterList(nn.Parameter(whs_init_logits(cfg.trunk_layers + 1)) for _ in range(readers))
        self.norm_f = Norm(d)
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)  # untied from tok_emb
        self.apply(self._init_weights)

    def head_slot(self, i: int) -> int:
        """The KV-cache slot of head i (0-based): one per head and depth, shared modules included."""
        return self.config.trunk_layers + i

    # Heads that read only the trunk output can be run, and freed, one at a time.
    @property
    def heads_independent(self) -> bool:
        return self.config.head_kind in ("parallel", "linear")

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            std = self.config.init_std
            if getattr(module, "residual", False):  # GPT-2: scale residual projections by depth
                std /= math.sqrt(2 * max(1, self.config.layers))
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def param_counts(self) -> dict[str, int]:
        """Total and non-embedding parameters (embedding and unembedding excluded)."""
        total = sum(p.numel() for p in self.parameters())
        emb = self.tok_emb.weight.numel() + self.lm_head.weight.numel()
        return {"total": total, "non_embedding": total - emb}

    # ---- forward pieces (lab.loss composes them for training) ----

    def trunk_forward(self, idx, cache: KVCache | None = None, attn_mask=None):
        """idx (B, T) -> trunk output h (B, T, d).

        With weighted hidden states the trunk output is every hidden state
        instead, stacked: H (L+1, B, T, d), H[0] the embedding output and
        H[l] block l's output (H[-1] is the h above). Whatever consumes the
        trunk output (``head_states``, ``lab.loss``'s detached copy of it)
        passes it on as one tensor; ``head_input`` makes each head's input.
        ``attn_mask`` (from ``document_mask``; training only) restricts every
        attention layer, here and in the heads, to its own document.
        """
        x = self.tok_emb(idx)
        states = [x] if self.config.head_input == "weighted" else None
        for block in self.trunk:
            x = block(x, self.rope, cache, attn_mask)
            if states is not None:
                states.append(x)
        return torch.stack(states) if states is not None else x

    def head_input(self, i: int, h):
        """What head i (0-based) reads from the trunk output: h itself, or its weighted mix of the states.

        Weighted: sum_l softmax(a_i)_l H_l, (L+1, B, T, d) -> (B, T, d), with
        a_i = ``head_mix[i]`` for parallel and linear heads, ``head_mix[0]``
        for the chained kinds (only one of their heads reads the trunk).
        """
        if self.config.head_input == "last":
            return h
        w = self.head_mix[i if self.heads_independent else 0].softmax(0)  # (L+1,) mixing weights, sum 1
        # elementwise, not a matmul: autocast leaves it in h's dtype (fp32 residual stream, as for "last")
        return (w.to(h.dtype)[:, None, None, None] * h).sum(0)

    def head_state(self, i: int, h, cache: KVCache | None = None, attn_mask=None):
        """z_i from the trunk output h, for independent head kinds only."""
        head, x = self.heads[i], self.head_input(i, h)
        return head(x) if self.config.head_kind == "linear" else head(x, self.rope, cache, attn_mask)

    def head_states(self, h, tokens=None, upto: int | None = None, cache: KVCache | None = None, attn_mask=None):
        """The hidden states z_1..z_upto (each (B, T, d)) from the trunk output h.

        ``tokens`` is only read by sequential heads: module k >= 2 needs the
        true token x[t+k-1], i.e. tokens[:, k-1 : T+k-1]; pass the training
        window (B, T + n) or at least T + upto - 1 columns.
        """
        kind, n = self.config.head_kind, self.config.n
        upto = n if upto is None else upto
        if self.heads_independent:
            return [self.head_state(i, h, cache, attn_mask) for i in range(upto)]
        if kind == "causal":
            zs, z = [], self.head_input(0, h)
            for i in range(upto):
                z = self.heads[i](z, self.rope, cache, attn_mask)
                zs.append(z)
            return zs
        if kind == "anticausal":  # head n reads h; head i reads head i+1; head 1 needs them all
            zs, z = [None] * n, self.head_input(n - 1, h)
            for i in reversed(range(n)):
                z = self.heads[i](z, self.rope, cache, attn_mask)
                zs[i] = z
            return zs[:upto]
        # sequential
        T = h.shape[-2]  # h is (B, T, d) or, weighted, (L+1, B, T, d)
        zs = [self.heads[0](self.head_input(0, h), self.rope, cache, attn_mask)]
        for k in range(1, upto):  # module index k predicts x[t+k+1] from z_k and emb(x[t+k])
            emb = self.tok_emb(tokens[:, k:T + k])
            zs.append(self.heads[k](zs[-1], emb, self.rope, cache, attn_mask, self.head_slot(k)))
        return zs

    def logits(self, z):
        """Shared final norm and unembedding: z (B, T, d) -> logits (B, T, V)."""
        return self.lm_head(self.norm_f(z))

    def forward(self, idx, heads: int | None = None, cache: KVCache | None = None):
        """Logits of the first ``heads`` heads (default all): a list of (B, T, V).

        For inference and teacher-forced evaluation. Sequential heads k >= 2
        read the true tokens that follow; at the last k-1 positions of ``idx``
        there are none, so they see token 0 there and their predictions at
        those positions are meaningless.
        """
        n = self.config.n
        heads = n if heads is None else heads
        h = self.trunk_forward(idx, cache)
        tokens = idx
        if self.config.head_kind in SEQUENTIAL_KINDS and heads > 1:
            tokens = F.pad(idx, (0, heads - 1), value=0)
        return [self.logits(z) for z in self.head_states(h, tokens, upto=heads, cache=cache)]

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.lm_head.weight
        cfg = self.config
        return KVCache(self.n_blocks, batch, cfg.n_heads, cfg.d_model // cfg.n_heads, max_len, p.device, p.dtype)

    @torch.inference_mode()
    def generate(self, idx, max_new_tokens: int, stop_token: int | None = None):
        """Greedy decoding with the next-token head and a KV cache.

        idx (B, T) -> new tokens (B, <= max_new_tokens); stops early once
        every row has produced ``stop_token``.
        """
        B, T = idx.shape
        cache = self.new_cache(B, T + max_new_tokens)
        logits = self(idx, heads=1, cache=cache)[0][:, -1]
        cache.seek(T)
        out, done = [], torch.zeros(B, dtype=torch.bool, device=idx.device)
        for step in range(max_new_tokens):
            nxt = logits.argmax(-1)  # (B,)
            out.append(nxt)
            if stop_token is not None:
                done |= nxt == stop_token
                if bool(done.all()):
                    break
            if step + 1 < max_new_tokens:
                logits = self(nxt[:, None], heads=1, cache=cache)[0][:, -1]
                cache.seek(cache.length + 1)
        return torch.stack(out, dim=1)
