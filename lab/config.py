"""Run configuration: frozen dataclasses, built in one place.

A run is fully described by :class:`RunConfig` = task + model + train. Every
field can be overridden by its dotted name, from the CLI
(``--set train.lr=3e-4``) or from a sweep spec (``model.head_kind: causal``),
and the whole thing round-trips through JSON (``config.json`` in a run
folder).

The config code never looks a task up: the caller hands it the task class
(``generators.registry.get(name)``), or the lookup itself when reading a
stored config whose task is named inside. The field coercion and hashing
beneath it live in :mod:`lab.fields`.

Example:
    >>> from generators import registry
    >>> cfg = build_run_config(registry.get("polyarith"), {"model.n": "2", "train.lr": "3e-4"})
    >>> cfg.model.n, cfg.train.lr
    (2, 0.0003)
    >>> RunConfig.from_dict(cfg.to_dict(), registry.get) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from lab.errors import UserError
from lab.fields import build_dataclass

# The paper's size ladder (Table S14): d_model, layers (trunk + heads), attention heads.
# Non-embedding parameters ~ 12 * layers * d_model^2, which is where the names come from.
# 0.1M and 0.3M are ours, below the paper's smallest, for CPU grids: the same 12 d^2 per layer,
# 4 layers (so n = 2 and 4 fit with parameter matching) and attention heads of 24 and 20 dimensions.
SIZES: dict[str, tuple[int, int, int]] = {
    "0.1M": (48, 4, 2),
    "0.3M": (80, 4, 4),
    "1M": (128, 5, 4),
    "3M": (256, 4, 8),
    "10M": (384, 6, 8),
    "30M": (512, 10, 8),
    "100M": (768, 14, 12),
    "300M": (1024, 25, 16),
    "1B": (1536, 36, 24),
}


def nominal_count(size: str) -> float | None:
    """The parameter count a ladder size stands for ("0.1M" -> 1e5, "1B" -> 1e9); None for a name off the ladder.

    Example:
        >>> nominal_count("0.3M"), nominal_count("30M"), nominal_count("1B"), nominal_count("custom")
        (300000.0, 30000000.0, 1000000000.0, None)
    """
    if size not in SIZES:
        return None
    return float(size[:-1]) * {"M": 1e6, "B": 1e9}[size[-1]]


# The ladder smallest first, with the nominal non-embedding count each name stands for (figures sort sizes by it).
LADDER: dict[str, float] = dict(sorted(((name, nominal_count(name)) for name in SIZES), key=lambda kv: kv[1]))

HEAD_KINDS = ("parallel", "linear", "causal", "anticausal", "sequential", "sequential_shared")
# Kinds whose heads k >= 2 are DeepSeek-V3 MTP modules (read z_{k-1} and the embedding of x[t+k-1]);
# sequential_shared applies ONE such module at every depth 2..n (GLM/Nemotron style).
SEQUENTIAL_KINDS = ("sequential", "sequential_shared")
HEAD_INPUTS = ("last", "weighted")  # what the heads read from the trunk (ModelConfig.head_input)

# The largest training budget accepted: far above any run this lab is for (the paper's largest synthetic
# runs are 2.5e10 tokens), low enough that a typo'd exponent (--tokens 2e30) is refused, not started.
MAX_TOKENS = 10**13
MAX_SEED = 2**63 - 1  # torch.manual_seed takes at most a 64-bit value


@dataclass(frozen=True)
class ModelConfig:
    """The transformer: trunk + n heads + shared final norm and unembedding.

    ``layers`` counts trunk + head layers (the paper's convention). By default
    the n heads are parameter-matched: they replace n-1 trunk layers. With
    ``heads_on_top`` they are added on top of the n=1 model instead.
    ``d_model``/``layers``/``n_heads`` of 0 take the value of ``size``; set all
    three (and ``size=custom``) for a shape off the ladder.
    """

    size: str = "1M"
    d_model: int = 0
    layers: int = 0
    n_heads: int = 0
    n: int = 1  # number of future tokens predicted (number of output heads)
    head_kind: str = "parallel"
    heads_on_top: bool = False
    loss_weights: tuple[float, ...] = ()  # one per head; empty = all 1.0 (the paper)
    vocab_size: int = 0  # 0 = from the task's tokenizer
    mlp_ratio: int = 4
    rope_base: float = 10000.0
    init_std: float = 0.02  # std of the normal init of every linear and embedding weight (GPT-2's 0.02)
    # What the heads read from the trunk: "last" = the last trunk layer's output (the paper); "weighted" =
    # weighted hidden states (Mehra et al. 2025): a learned softmax mix of the embedding output and every
    # trunk layer's output, one mix per head that reads the trunk (lab.model.MTPModel.head_input).
    head_input: str = "last"

    def resolved(self) -> "ModelConfig":
        """Fill the shape from the size preset and validate everything.

        Example:
            >>> ModelConfig(size="10M", n=4).resolved().trunk_layers  # 6 layers: 2 trunk + 4 heads
            2
        """
        d, L, h = self.d_model, self.layers, self.n_heads
        if self.size != "custom":
            if self.size not in SIZES:
                raise UserError(f"unknown size '{self.size}'; choose one of {', '.join(SIZES)} or size=custom with d_model/layers/n_heads")
            pd, pL, ph = SIZES[self.size]
            d, L, h = d or pd, L or pL, h or ph
        elif not (d > 0 and L > 0 and h > 0):
            raise UserError(f"size=custom needs model.d_model, model.layers and model.n_heads all positive "
                            f"(got {d}, {L}, {h}; 0 means 'from the size preset', and custom has none)")
        if min(d, L, h) < 1:
            raise UserError(f"d_model, layers and n_heads must be positive (got {d}, {L}, {h})")
        if d % h or (d // h) % 2:
            raise UserError(f"d_model {d} must split into {h} attention heads of even size")
        if self.n < 1:
            raise UserError(f"n (number of predicted tokens) must be >= 1, got {self.n}")
        if self.head_kind not in HEAD_KINDS:
            raise UserError(f"unknown head kind '{self.head_kind}'; choose one of {', '.join(HEAD_KINDS)}")
        if self.head_input not in HEAD_INPUTS:
            raise UserError(f"unknown model.head_input '{self.head_input}'; choose one of {', '.join(HEAD_INPUTS)}")
        if self.loss_weights and len(self.loss_weights) != self.n:
            raise UserError(f"loss_weights has {len(self.loss_weights)} entries but n={self.n}; give one weight per head")
        if any(not (0 <= w < math.inf) for w in self.loss_weights) or (self.loss_weights and not any(self.loss_weights)):
            raise UserError(f"loss_weights must be finite, >= 0 and not all zero, got {list(self.loss_weights)}")
        if self.mlp_ratio < 1:
            raise UserError(f"model.mlp_ratio must be at least 1 (the MLP is mlp_ratio x d_model wide), got {self.mlp_ratio}")
        if not (0 < self.init_std < math.inf):
            raise UserError(f"model.init_std must be a positive number (default 0.02), got {self.init_std}")
        if not (0 < self.rope_base < math.inf):
            raise UserError(f"model.rope_base must be a positive number (default 10000), got {self.rope_base}")
        if self.vocab_size < 0:
            raise UserError(f"model.vocab_size must be >= 0 (0: the tokenizer's), got {self.vocab_size}")
        cfg = dataclasses.replace(self, d_model=d, layers=L, n_heads=h)
        if cfg.trunk_layers < 1:
            raise UserError(
                f"n={self.n} leaves no trunk layer in a {L}-layer model (parameter matching removes n-1 trunk layers); "
                f"use n <= {L - 1}, a larger size, or model.heads_on_top=true")
        return cfg

    @property
    def trunk_layers(self) -> int:
        """Transformer layers below the heads.

        Block heads (every kind but ``linear``) are one transformer layer each:
        matched, the trunk keeps ``layers - n``; on top, ``layers - 1``.
        Linear heads are d x d maps, not layers: the trunk keeps ``layers - 1``
        and the linear heads stand in for the last layer. ``sequential_shared``
        heads are two layers whatever n (head 1 and the one shared module):
        matched, the trunk keeps ``layers - min(n, 2)``.
        """
        if self.heads_on_top or self.head_kind == "linear":
            return self.layers - 1
        if self.head_kind == "sequential_shared":  # head 1's layer and the one shared module
            return self.layers - min(self.n, 2)
        return self.layers - self.n

    @property
    def weights(self) -> tuple[float, ...]:
        """Per-head loss weights (all 1.0 unless set)."""
        return self.loss_weights or (1.0,) * self.n

    @property
    def paper_non_embedding(self) -> int:
        """Non-embedding parameters by the paper's rule, 12 x layers x d_model^2 (heads on top add n-1 layers).

        Of a resolved config (the sizes' names come from it); the model itself counts exactly
        (``MTPModel.param_counts``).

        Example:
            >>> ModelConfig(size="1M").resolved().paper_non_embedding
            983040
        """
        extra = self.n - 1 if self.heads_on_top else 0
        return 12 * (self.layers + extra) * self.d_model * self.d_model


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, budget, data order, logging and device.

    The budget is ``tokens`` (or ``steps`` if set, which wins). The paper's
    synthetic runs use 100k steps of 0.25M tokens at lr 1e-4 with 2000 warmup
    steps; the defaults here are scaled to a CPU (see README, "Budgets").
    """

    seed: int = 0  # model init and data order (0 .. 2**63-1)
    data_seed: int = 0  # which dataset (train/test examples); fixed across seeds by default
    tokens: int = 2_000_000  # training budget in tokens (at most MAX_TOKENS = 1e13)
    steps: int = 0  # if > 0, overrides `tokens`; 0 = derive the steps from `tokens`
    batch_tokens: int = 8192  # tokens per optimizer step (gradient accumulation reaches it)
    micro_batch: int = 0  # sequences per forward/backward (all torchrun processes together); 0 = whole batch at once
    context: int = 0  # sequence length; 0 = the task's default_context (polyarith 256, induction 512)
    lr: float = 1e-3
    min_lr_ratio: float = 0.03  # cosine decays to 3% of peak (paper)
    warmup_steps: int = -1  # -1 = min(2000, steps // 10)
    weight_decay: float = 0.1  # on matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 0  # steps between evals; 0 = 5 evals per run
    # Windows at the end of the training stream kept out of training (at most a tenth of them): every
    # eval reports loss/heldout on them, loss/seen on as many windows the run trained on first, and
    # memorization_gap = loss/heldout - loss/seen (nats, next-token head). 0 = off.
    heldout_windows: int = 32
    # Attention within each packed document only (lab.model.document_mask): a training window then looks,
    # to every example in it, as a prompt does at evaluation (alone, after the end-of-text token).
    # False: plain causal attention across the whole window (the paper's packing; it does not say more).
    document_mask: bool = False
    # The final eval's marginalization baseline (lab.marginal, Mehra et al. 2025): top-1 accuracy of predicting
    # x[t+2] and x[t+3] by marginalizing head 1 over the tokens between, next to heads 2 and 3, on this many
    # positions of held-out documents (future_acc/k=K/...). 0 = off.
    marginal_positions: int = 256
    eval_examples: int = 0  # examples per slice (e.g. per m) at intermediate evals; 0 = all (the final eval scores all)
    log_interval: int = 10
    checkpoint_interval: int = 0  # 0 = at every eval
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    dtype: str = "auto"  # auto (bf16 on cuda, fp32 on cpu) | float32 | bfloat16
    compile: bool = False  # torch.compile every transformer block (CUDA; tested on the CPU too)
    # Recompute each block's activations in the backward instead of keeping them (torch.utils.checkpoint):
    # activation memory drops to one fp32 residual per block and token, for about a third more compute.
    # The lever for the largest sizes (README, "Many GPUs"); the gradients are those without it.
    activation_checkpointing: bool = False
    threads: int = 0  # CPU threads for torch; 0 = torch's default (sweeps set cores // workers)
    progress: bool = True  # tqdm bar
    # ---- starting from another run, and training parts of the model (lab.finetune, docs/from-next-token.md) ----
    # A run folder whose checkpoint this run starts from (e.g. a trained n=1 model): its embedding, trunk, heads,
    # final norm and unembedding are loaded; heads it lacks are added on top (model.heads_on_top is forced on).
    # "" = a fresh model. Read only at the start: a resumed run continues from its own checkpoint.
    init_from: str = ""
    init_heads: str = "copy"  # heads the source lacks: "copy" (of the source's last head) | "random" (fresh init)
    # Parameter groups kept fixed for the whole run (not in the optimizer at all): "none"; "trunk" = every
    # parameter the heads share (embedding, trunk layers, final norm, unembedding); "source_heads" = the heads
    # loaded from train.init_from. "trunk,source_heads" trains only the added heads (the source model's own
    # outputs then stay exactly as they were).
    freeze: tuple[str, ...] = ()
    trunk_lr_mult: float = 1.0  # the trunk's lr = schedule x this (>= 0; same "trunk" as train.freeze)
    head_lr_mult: float = 1.0  # every head's lr = schedule x this (>= 0)
    head_warmup_steps: int = 0  # the first K steps train the heads only (trunk fixed), then everything
    # Anneal the loss weights of heads 2..n linearly from model.loss_weights (the start) to these end values
    # over the first loss_weight_anneal_steps steps, then keep them (modded-nanogpt anneals its extra targets
    # to pure next-token prediction: end 0). One value (for every head 2..n) or n-1 values; 0 steps = off.
    loss_weight_anneal_steps: int = 0
    loss_weights_end: tuple[float, ...] = ()

    @property
    def seqs_per_step(self) -> int:
        return max(1, self.batch_tokens // self.context)

    @property
    def budget_tokens(self) -> int:
        """Training tokens of the run: ``tokens``, or what ``steps`` full batches hold when set.

        Example:
            >>> TrainConfig(tokens=3_000_000).budget_tokens, TrainConfig(steps=100, batch_tokens=8192, context=256).budget_tokens
            (3000000, 819200)
        """
        return self.steps * self.seqs_per_step * self.context if self.steps > 0 else self.tokens

    def total_steps(self) -> int:
        """Optimizer steps of the run.

        Example:
            >>> TrainConfig(tokens=1_000_000, batch_tokens=10_000, context=100).total_steps()
            100
        """
        if self.steps > 0:
            return self.steps
        return max(1, self.tokens // (self.seqs_per_step * self.context))

    @property
    def frozen(self) -> frozenset[str]:
        """The groups of ``freeze`` (``"none"`` dropped).

        Example:
            >>> sorted(TrainConfig(freeze=("trunk",)).frozen), TrainConfig(freeze=("none",)).frozen
            (['trunk'], frozenset())
        """
        return frozenset(self.freeze) - {"none"}

    def validate(self, model: "ModelConfig | None" = None) -> "TrainConfig":
        """Every field's range, in one place; a one-line UserError naming the field and what it takes.

        With ``model`` (its ModelConfig, resolved or not), the checks that need it too
        (the loss-weight anneal's length, init_from's heads on top).

        Example:
            >>> TrainConfig(context=256, beta2=1.0).validate()
            Traceback (most recent call last):
            ...
            lab.errors.UserError: train.beta2 must be in [0, 1), got 1.0
        """
        if self.steps < 0 or (self.steps == 0 and self.tokens <= 0):
            raise UserError(f"the training budget must be positive (tokens={self.tokens}, steps={self.steps}; "
                            f"steps=0 means: from tokens)")
        for name in ("batch_tokens", "context", "log_interval"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.batch_tokens < self.context:
            raise UserError(f"train.batch_tokens ({self.batch_tokens}) must be at least train.context ({self.context})")
        budget = self.budget_tokens
        if budget > MAX_TOKENS:
            raise UserError(f"a training budget of {budget:.3g} tokens (tokens={self.tokens:.3g}, steps={self.steps:.3g}) "
                            f"is beyond the {MAX_TOKENS:.0e} this lab accepts; check the exponent")
        if not (0 < self.lr < math.inf):
            raise UserError(f"train.lr must be a positive number, got {self.lr}")
        for name in ("beta1", "beta2"):
            if not (0 <= getattr(self, name) < 1):
                raise UserError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")
        if not (0 < self.grad_clip <= math.inf):
            raise UserError(f"train.grad_clip must be positive (the largest gradient norm; inf: no clipping), got {self.grad_clip}")
        if not (0 <= self.min_lr_ratio <= 1):
            raise UserError(f"train.min_lr_ratio must be in [0, 1] (the final lr as a fraction of the peak), got {self.min_lr_ratio}")
        if not (0 <= self.weight_decay < math.inf):
            raise UserError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_steps < -1:
            raise UserError(f"train.warmup_steps must be >= 0, or -1 for min(2000, steps/10); got {self.warmup_steps}")
        for name in ("seed", "data_seed"):
            if not (0 <= getattr(self, name) <= MAX_SEED):
                raise UserError(f"train.{name} must be in 0 .. 2**63-1, got {getattr(self, name)}")
        for name in ("micro_batch", "eval_interval", "eval_examples", "heldout_windows", "checkpoint_interval", "threads",
                     "marginal_positions"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} must be >= 0 (0: {_ZERO_MEANS[name]}), got {getattr(self, name)}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise UserError(f"unknown dtype '{self.dtype}'; choose auto, float32 or bfloat16")
        self._validate_finetune(model)
        return self

    def _validate_finetune(self, model: "ModelConfig | None") -> None:
        """The fields of init_from, freezing, per-group lrs and the loss-weight anneal (lab.finetune)."""
        if self.init_heads not in INIT_HEADS:
            raise UserError(f"unknown train.init_heads '{self.init_heads}'; choose {' or '.join(INIT_HEADS)}")
        unknown = [g for g in self.freeze if g not in FREEZE_GROUPS]
        if unknown:
            raise UserError(f"unknown train.freeze group '{unknown[0]}'; choose none, or any of "
                            f"{', '.join(FREEZE_GROUPS[1:])} (comma-separated)")
        if "none" in self.freeze and len(self.freeze) > 1:
            raise UserError(f"train.freeze 'none' cannot be combined with other groups, got {','.join(self.freeze)}")
        if "source_heads" in self.frozen and not self.init_from:
            raise UserError("train.freeze=source_heads needs train.init_from (the source run whose heads stay fixed)")
        for name in ("trunk_lr_mult", "head_lr_mult"):
            if not (0 <= getattr(self, name) < math.inf):
                raise UserError(f"train.{name} must be a finite number >= 0 (the lr is schedule x it), "
                                f"got {getattr(self, name)}")
        if self.head_lr_mult == 0 and (self.trunk_lr_mult == 0 or "trunk" in self.frozen):
            raise UserError("nothing would train: train.head_lr_mult is 0 and the trunk is frozen or has lr "
                            "multiplier 0")
        for name in ("head_warmup_steps", "loss_weight_anneal_steps"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} must be >= 0 (0: off), got {getattr(self, name)}")
        if any(not (0 <= w < math.inf) for w in self.loss_weights_end):
            raise UserError(f"train.loss_weights_end must be finite and >= 0, got {list(self.loss_weights_end)}")
        if bool(self.loss_weight_anneal_steps) != bool(self.loss_weights_end):
            raise UserError("the loss-weight anneal needs both train.loss_weight_anneal_steps (> 0) and "
                            "train.loss_weights_end (the end weights of heads 2..n); set both or neither")
        if model is None:
            return
        if self.init_from and not model.heads_on_top:
            raise UserError("train.init_from keeps every layer of the source model and adds heads on top; "
                            "model.heads_on_top=false (parameter matching) would delete trained trunk layers: drop it")
        if self.loss_weights_end:
            if model.n < 2:
                raise UserError(f"train.loss_weights_end anneals the weights of heads 2..n, but n={model.n}")
            if len(self.loss_weights_end) not in (1, model.n - 1):
                raise UserError(f"train.loss_weights_end has {len(self.loss_weights_end)} entries; give one value or "
                                f"n-1 = {model.n - 1} (the end weights of heads 2..{model.n})")
            if model.weights[0] == 0 and not any(self.loss_weights_end):
                raise UserError("the loss-weight anneal ends with every weight 0 (head 1's weight is 0 and "
                                "train.loss_weights_end all 0)")


INIT_HEADS = ("copy", "random")  # TrainConfig.init_heads
FREEZE_GROUPS = ("none", "trunk", "source_heads")  # TrainConfig.freeze (lab.finetune.part_of says which is which)

_ZERO_MEANS = {
    "micro_batch": "the whole batch at once", "eval_interval": "5 evals per run", "eval_examples": "all",
    "heldout_windows": "off", "checkpoint_interval": "at every eval", "threads": "torch's default",
    "marginal_positions": "off",
}


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rerun: task (name + its config), model, train."""

    task_name: str
    task: Any  # the task's own frozen Config dataclass
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {
            "task": {"name": self.task_name, **dataclasses.asdict(self.task)},
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, d: dict, tasks: Callable[[str], Any]) -> "RunConfig":
        """Read a config written by :meth:`to_dict` (a run folder's ``config.json``).

        ``tasks`` looks up the task class by the name stored in ``d``
        (``generators.registry.get``; anything whose result has ``.Config``).

        Example:
            >>> from generators import registry
            >>> cfg = RunConfig.from_dict({"task": {"name": "polyarith"}, "model": {"n": 2}}, registry.get)
            >>> cfg.task_name, cfg.model.n, cfg.train.heldout_windows
            ('polyarith', 2, 0)
        """
        task = dict(d["task"])
        name = task.pop("name")
        train = dict(d.get("train", {}))
        # Runs saved before held-out windows existed trained on every window: keep their data order on resume.
        train.setdefault("heldout_windows", 0)
        return cls(
            task_name=name,
            task=build_dataclass(tasks(name).Config, task, where="task"),
            model=build_dataclass(ModelConfig, d.get("model", {}), where="model"),
            train=build_dataclass(TrainConfig, train, where="train"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def build_run_config(task: Any, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The one place a RunConfig is built: the task class + dotted overrides.

    ``task`` is the task's class as the registry holds it
    (``generators.registry.get(name)``: its ``name``, ``Config`` and
    ``default_context``). Keys are ``task.<field>``, ``model.<field>`` or
    ``train.<field>``. The model is resolved (size preset filled in) and
    everything validated.

    Example:
        >>> from generators import registry
        >>> cfg = build_run_config(registry.get("polyarith"), {"model.size": "10M", "model.n": 4})
        >>> cfg.model.d_model, cfg.model.trunk_layers
        (384, 2)
        >>> build_run_config(registry.get("polyarith"), {"model.n": "two"})
        Traceback (most recent call last):
        ...
        lab.errors.UserError: model.n: expected int, got 'two'
    """
    if isinstance(task, str):
        raise TypeError(f"build_run_config takes the task class, not its name: generators.registry.get({task!r})")
    groups: dict[str, dict[str, Any]] = {"task": {}, "model": {}, "train": {}}
    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if head not in groups or not rest or "." in rest:
            raise UserError(f"bad config key '{key}'; use task.<field>, model.<field> or train.<field>")
        groups[head][rest] = value
    train = build_dataclass(TrainConfig, groups["train"], where="train")
    if train.context == 0:
        train = dataclasses.replace(train, context=task.default_context)
    if train.init_from and "heads_on_top" not in groups["model"]:
        # Heads are added on top of a source model, never in place of its trained trunk layers; an explicit
        # model.heads_on_top=false is refused by TrainConfig.validate, with the reason.
        groups["model"]["heads_on_top"] = True
    model = build_dataclass(ModelConfig, groups["model"], where="model")
    train = train.validate(model)  # first: it says why init_from and parameter matching conflict
    return RunConfig(
        task_name=task.name,
        task=build_dataclass(task.Config, groups["task"], where="task"),
        model=model.resolved(),
        train=train,
    )

