"""Start a run from another run's checkpoint, and train only parts of the model.

The use case (docs/from-next-token.md): take a trained next-token model
(n=1) and add multi-token heads to it, on a frozen trunk or jointly, with
per-group learning rates, a heads-only warmup and a loss-weight schedule.
Every knob is a ``train.*`` field (lab.config.TrainConfig); lab.train calls
the functions here.

**Parts.** Every parameter is either the *trunk*, the parameters every head
shares (token embedding, trunk layers, final norm, unembedding), or a
*head*'s own (``heads.i.*`` and, with weighted hidden states, its mixing
logits ``head_mix.i``). The shared final norm and unembedding count as trunk
on purpose: they are the source model's vocabulary map, read by every head,
so ``train.freeze=trunk`` fixes everything but the heads' own layers (each
head then learns to write into the space the source's unembedding reads),
and ``train.freeze=trunk,source_heads`` keeps the source model's own outputs
bit for bit while the added heads train. Heads loaded from the source are
*source heads*; the others are added ones.

**init_from.** The source's every parameter is loaded (the trunk keeps all its
layers: the added heads go on top, ``model.heads_on_top``), and the heads it
lacks are copies of its last head (``train.init_heads=copy``) or freshly
initialised (``random``). Everything is checked before the run folder is
created; the run's config.json records the source under ``meta.init_from``.

Example:
    >>> part_of("trunk.0.attn.qkv.weight"), part_of("heads.2.mlp.up.weight", n_source=1)
    ('trunk', 'heads')
    >>> part_of("heads.0.norm1.weight", n_source=1), part_of("lm_head.weight")
    ('source_heads', 'trunk')
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from lab import checkpoint as ckpt
from lab.config import ModelConfig, RunConfig, TrainConfig
from lab.errors import UserError
from lab.model import Block, SequentialHead

TRUNK_PREFIXES = ("tok_emb.", "trunk.", "norm_f.", "lm_head.")  # the parameters every head shares
# Model fields that must equal the source's for its weights to mean the same thing here.
SHARED_FIELDS = ("d_model", "n_heads", "mlp_ratio", "rope_base")
# A head that read the last trunk layer in the source keeps reading it (to within this share of its input) when
# the new run reads weighted hidden states: its mixing logits start this saturated, so its logits equal the
# source's to about 1e-6 and Adam (~lr per step) cannot move them in a finetuning run. Added heads start at
# lab.model.WHS_INIT_LAST and learn their mixes (Mehra et al.: the next-token head keeps its input, the MTP heads
# read the weighted states).
SOURCE_HEAD_OTHER_SHARE = 1e-6


def part_of(name: str, n_source: int = 0) -> str:
    """The part a parameter (by its name in ``model.named_parameters()``) belongs to.

    ``"trunk"``, ``"source_heads"`` (heads 0 .. n_source-1, loaded from
    train.init_from) or ``"heads"`` (the others). ``head_mix.i`` belongs to
    head i (for chained kinds there is only ``head_mix.0``, read by the
    chain's first head).

    Example:
        >>> part_of("head_mix.1", n_source=2), part_of("tok_emb.weight")
        ('source_heads', 'trunk')
    """
    if name.startswith(TRUNK_PREFIXES):
        return "trunk"
    head, _, rest = name.partition(".")
    if head not in ("heads", "head_mix"):
        raise ValueError(f"parameter {name} is neither trunk nor head: add it to lab.finetune.part_of")
    return "source_heads" if int(rest.split(".")[0]) < n_source else "heads"


@dataclasses.dataclass(frozen=True)
class Source:
    """A run a new run starts from: its folder, config and checkpoint."""

    run_dir: Path
    config: RunConfig
    state: dict  # the checkpoint's model state dict (on the CPU)
    step: int
    finished: bool

    @property
    def n(self) -> int:
        return self.config.model.n

    def meta(self) -> dict:
        """What the new run's config.json records under ``meta.init_from``."""
        return {"run_dir": str(self.run_dir.resolve()), "step": self.step, "finished": self.finished,
                "n": self.n, "head_kind": self.config.model.head_kind}


def read_source(config: RunConfig, tasks) -> Source | None:
    """The source run of ``config`` (``train.init_from``), checked against ``config``; None without one.

    ``tasks`` looks up a task class by name (``generators.registry.get``), to read the source's config.

    A one-line UserError for a folder that is not a run, a missing or
    corrupt checkpoint, another task, a model whose shared part differs
    (d_model, n_heads, ..., the number of trunk layers), fewer heads than the
    source, head kinds that cannot share the source's heads, or a freeze that
    leaves nothing to train. The vocabulary is checked by :func:`load_into`.

    Example:
        >>> from generators import registry
        >>> from lab.config import build_run_config
        >>> config = build_run_config(registry.get("polyarith"), {"train.init_from": "/nonexistent"})
        >>> read_source(config, registry.get)
        Traceback (most recent call last):
        ...
        lab.errors.UserError: train.init_from: /nonexistent is not a run folder (no config.json)
    """
    if not config.train.init_from:
        return None
    run_dir = Path(config.train.init_from)
    try:
        src = ckpt.read_config(run_dir, tasks)
        state = ckpt.load_checkpoint(run_dir)
    except UserError as e:
        raise UserError(f"train.init_from: {e}") from None
    where = f"train.init_from {run_dir}"
    if src.task_name != config.task_name:
        raise UserError(f"{where} was trained on task '{src.task_name}', this run is '{config.task_name}'; "
                        f"use --task {src.task_name}")
    sm, tm = src.model, config.model
    for name in SHARED_FIELDS:
        if getattr(sm, name) != getattr(tm, name):
            raise UserError(f"{where} has model.{name}={getattr(sm, name)}, this run {getattr(tm, name)}; they "
                            f"must match (give the source's size, or --size custom with its shape)")
    if sm.head_input == "weighted" and tm.head_input != "weighted":
        raise UserError(f"{where} reads weighted hidden states and this run model.head_input={tm.head_input}: that "
                        f"would drop its trained mixes; use model.head_input=weighted")
    if sm.vocab_size and tm.vocab_size and sm.vocab_size != tm.vocab_size:
        raise UserError(f"{where} has a vocabulary of {sm.vocab_size} tokens, this run {tm.vocab_size}")
    if sm.trunk_layers != tm.trunk_layers:
        raise UserError(f"{where} has {sm.trunk_layers} trunk layers, this run {tm.trunk_layers} (model.layers="
                        f"{tm.layers}, heads on top); set model.layers={sm.trunk_layers + 1} to keep exactly its trunk")
    if tm.n < sm.n:
        raise UserError(f"{where} has n={sm.n} heads and this run n={tm.n}: that would drop trained heads; "
                        f"use n >= {sm.n}")
    if sm.head_kind != tm.head_kind and (sm.n > 1 or "linear" in (sm.head_kind, tm.head_kind)):
        raise UserError(f"{where} has {sm.head_kind} heads, this run {tm.head_kind}; heads can only be added "
                        f"of the source's kind (or of any block kind to an n=1 block model)")
    if tm.head_kind == "anticausal" and tm.n > sm.n:
        raise UserError(f"{where}: anticausal heads read the head after them (head 1 reads head 2), so added "
                        f"heads would change what the trained heads read; use another head kind")
    if {"trunk", "source_heads"} <= config.train.frozen and tm.n == sm.n:
        raise UserError(f"train.freeze={','.join(config.train.freeze)} with n={tm.n} = the source's leaves nothing "
                        f"to train (no heads are added)")
    return Source(run_dir, src, state["model"], int(state["step"]), bool(state.get("finished", False)))


def recorded_source_heads(run_dir: Path) -> int:
    """How many heads a run (its config.json) took from its train.init_from source: 0 if none.

    Read on resume, where the source itself is not read again.

    Example:
        >>> recorded_source_heads(Path("/nonexistent"))
        0
    """
    path = Path(run_dir) / "config.json"
    try:
        return int(json.loads(path.read_text())["meta"]["init_from"]["n"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


@torch.no_grad()
def load_into(model, source: Source, init_heads: str = "copy") -> None:
    """Load the source's weights into ``model`` and initialise the heads it lacks.

    Every source tensor must exist in ``model`` with the same shape (a
    one-line UserError otherwise, e.g. another vocabulary). Added heads
    (``source.n`` .. n-1) are copies of the source's last head with
    ``init_heads="copy"`` (a sequential head copies a plain block's weights
    into its block; its merge layer stays freshly initialised), or keep
    their fresh initialisation with ``"random"``. A run reading weighted
    hidden states from a source that read the last layer: the source's heads
    keep reading it (mixing logits saturated, see SOURCE_HEAD_OTHER_SHARE) and
    the added heads start from lab.model.whs_init_logits.

    Example:
        >>> from lab.model import MTPModel
        >>> cfg = ModelConfig(size="custom", d_model=16, layers=2, n_heads=2, n=1, vocab_size=20).resolved()
        >>> src = MTPModel(cfg)
        >>> model = MTPModel(dataclasses.replace(cfg, n=3, heads_on_top=True))
        >>> load_into(model, Source(Path("src"), RunConfig("polyarith", None, cfg), src.state_dict(), 10, True))
        >>> torch.equal(model.heads[2].mlp.up.weight, src.heads[0].mlp.up.weight)
        True
    """
    target = model.state_dict()
    src_vocab, vocab = source.state["tok_emb.weight"].shape[0], model.config.vocab_size
    if src_vocab != vocab:
        raise UserError(f"train.init_from {source.run_dir} has a vocabulary of {src_vocab} tokens, this run "
                        f"{vocab} (another tokenizer or model.vocab_size)")
    for key, value in source.state.items():
        if key not in target or target[key].shape != value.shape:
            have = tuple(target[key].shape) if key in target else "nothing"
            raise UserError(f"train.init_from {source.run_dir}: its {key} {tuple(value.shape)} does not fit this "
                            f"model ({have})")
    model.load_state_dict({**target, **source.state})
    whs = model.config.head_input == "weighted"
    source_whs = source.config.model.head_input == "weighted"
    if whs and not source_whs:
        for mix in model.head_mix[:source.n]:
            mix.copy_(saturated_last_logits(mix.numel()))
    if init_heads == "copy":
        last = source.n - 1
        for j in range(source.n, model.config.n):
            src, dst = model.heads[last], model.heads[j]
            (dst.block if isinstance(dst, SequentialHead) and isinstance(src, Block) else dst).load_state_dict(src.state_dict())
            if whs and source_whs and model.heads_independent:
                model.head_mix[j].copy_(model.head_mix[last])


def saturated_last_logits(states: int) -> torch.Tensor:
    """Mixing logits whose softmax puts all but SOURCE_HEAD_OTHER_SHARE on the last of ``states`` hidden states.

    Example:
        >>> w = saturated_last_logits(5).softmax(0)
        >>> float(w[-1]) > 1 - 1.01e-6, float(w[:-1].sum()) < 1.01e-6
        (True, True)
    """
    logits = torch.zeros(states)
    if states > 1:
        logits[-1] = math.log((states - 1) / SOURCE_HEAD_OTHER_SHARE)
    return logits


def freeze(model, train: TrainConfig, n_source: int = 0) -> None:
    """Fix the parts named in ``train.freeze``: no gradient, and :func:`param_groups` leaves them out.

    Example:
        >>> from lab.model import MTPModel
        >>> model = MTPModel(ModelConfig(size="custom", d_model=16, layers=2, n_heads=2, vocab_size=20).resolved())
        >>> freeze(model, TrainConfig(freeze=("trunk",)))
        >>> [n for n, p in model.named_parameters() if p.requires_grad][:1]
        ['heads.0.norm1.weight']
    """
    for name, p in model.named_parameters():
        if part_of(name, n_source) in train.frozen:
            p.requires_grad_(False)


def param_groups(model, train: TrainConfig, n_source: int = 0) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices only, an lr multiplier per part, frozen parts left out.

    Each group has ``lr_mult`` (``train.trunk_lr_mult`` or
    ``train.head_lr_mult``); lab.train sets its lr to schedule x lr_mult.
    Groups are keyed by (decay, multiplier) in the order the parameters come,
    so with equal multipliers there are exactly two, decay first, as before
    these knobs existed (old checkpoints resume).

    Example:
        >>> from lab.model import MTPModel
        >>> model = MTPModel(ModelConfig(size="custom", d_model=16, layers=2, n_heads=2, vocab_size=20).resolved())
        >>> [(g["weight_decay"], g["lr_mult"]) for g in param_groups(model, TrainConfig(head_lr_mult=3.0))]
        [(0.1, 1.0), (0.0, 1.0), (0.0, 3.0), (0.1, 3.0)]
    """
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        part = part_of(name, n_source)
        if part in train.frozen:
            continue
        mult = train.trunk_lr_mult if part == "trunk" else train.head_lr_mult
        decay = p.dim() >= 2
        group = groups.setdefault((decay, mult), {"params": [], "weight_decay": train.weight_decay if decay else 0.0,
                                                  "lr_mult": mult})
        group["params"].append(p)
    if not groups:
        raise UserError("train.freeze leaves nothing to train")
    return list(groups.values())


def trunk_trains(train: TrainConfig, step: int) -> bool:
    """Whether the trunk is trained at optimizer step ``step`` (0-based): not frozen and past the head warmup.

    Example:
        >>> t = TrainConfig(head_warmup_steps=2)
        >>> [trunk_trains(t, s) for s in range(4)]
        [False, False, True, True]
    """
    return "trunk" not in train.frozen and step >= train.head_warmup_steps


def set_trunk_trainable(model, on: bool) -> None:
    """Turn the trunk's gradients on or off (the head warmup). Off, AdamW skips the trunk (no gradient).

    Example:
        >>> from lab.model import MTPModel
        >>> model = MTPModel(ModelConfig(size="custom", d_model=16, layers=2, n_heads=2, vocab_size=20).resolved())
        >>> set_trunk_trainable(model, False)
        >>> model.tok_emb.weight.requires_grad, model.heads[0].mlp.up.weight.requires_grad
        (False, True)
    """
    for name, p in model.named_parameters():
        if part_of(name) == "trunk":
            p.requires_grad_(on)


def loss_weights_at(model_cfg: ModelConfig, train: TrainConfig, step: int) -> tuple[float, ...]:
    """Per-head loss weights at optimizer step ``step``: heads 2..n move linearly to train.loss_weights_end.

    From ``model.loss_weights`` at step 0 to the end values at step
    ``train.loss_weight_anneal_steps``, then constant. Head 1 keeps its weight.

    Example:
        >>> m = ModelConfig(n=3, loss_weights=(1.0, 1.0, 0.5))
        >>> t = TrainConfig(loss_weight_anneal_steps=4, loss_weights_end=(0.0,))
        >>> [loss_weights_at(m, t, s) for s in (0, 2, 4, 9)]
        [(1.0, 1.0, 0.5), (1.0, 0.5, 0.25), (1.0, 0.0, 0.0), (1.0, 0.0, 0.0)]
    """
    start = model_cfg.weights
    if not train.loss_weight_anneal_steps:
        return start
    end = train.loss_weights_end * (model_cfg.n - 1) if len(train.loss_weights_end) == 1 else train.loss_weights_end
    f = min(1.0, step / train.loss_weight_anneal_steps)
    return (start[0], *(s + (e - s) * f for s, e in zip(start[1:], end)))
