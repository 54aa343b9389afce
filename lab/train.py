"""One training run: config -> run folder (config, metrics, eval, checkpoint).

The loop, step by step:

    for step in range(start, total_steps):
        lr = warmup-then-cosine(step)
        for each micro-batch (gradient accumulation up to train.batch_tokens):
            window = next seqs of (context + n) tokens       # data position advances
            sequential_backward(model, window, scale=1/k)    # lab.loss: memory-efficient MTP
        clip grad norm to 1.0; AdamW step
        every log_interval: one line of metrics.jsonl
        every eval_interval (and at the end): task.evaluate -> eval.json, checkpoint.pt

Everything that decides what happens next (weights, optimizer moments, step,
data position, RNG states, eval history) is in the checkpoint, and the batch
order is a pure function of (seed, position), so :func:`resume` on
CPU reproduces the uninterrupted run exactly.

Example:
    >>> import tempfile
    >>> from lab.config import build_run_config
    >>> cfg = build_run_config(registry.get("polyarith"), {
    ...     "task.train_examples": 300, "task.test_per_op": 2, "model.size": "custom", "model.d_model": 32,
    ...     "model.layers": 2, "model.n_heads": 2, "train.steps": 3, "train.batch_tokens": 256,
    ...     "train.context": 64, "train.progress": False})
    >>> summary = run(cfg, Path(tempfile.mkdtemp()) / "run", quiet=True)
    >>> summary["step"], 0.0 <= summary["metrics"]["accuracy/ops=1"] <= 1.0
    (3, True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from generators import registry
from lab import checkpoint as ckpt
from lab import distributed, finetune
from lab.config import RunConfig
from lab.data import Windows, prepare
from lab.errors import UserError
from lab.distributed import Ranks
from lab.loss import next_token_nll, sequential_backward
from lab.memory import checkpoint_blocks
from lab.model import Block, MTPModel
from lab.agreement import agreement_windows, head_agreement
from lab.marginal import document_windows, future_accuracy


def select_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; a UserError for an unavailable device.

    Example:
        >>> select_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device type '{device.type}' is not supported; use cpu or cuda")
    return device


def autocast_for(device: torch.device, dtype: str):
    """bf16 autocast on CUDA (unless dtype=float32); fp32 (no autocast) on CPU."""
    if device.type == "cuda" and dtype in ("auto", "bfloat16"):
        return functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and dtype == "bfloat16":
        return functools.partial(torch.autocast, device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def lr_at(step: int, total: int, train) -> float:
    """Linear warmup to train.lr, then cosine decay to min_lr_ratio * lr.

    Example:
        >>> from lab.config import TrainConfig
        >>> t = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.03)
        >>> lr_at(0, 100, t), lr_at(9, 100, t), round(lr_at(99, 100, t), 3)
        (0.1, 1.0, 0.03)
    """
    warmup = train.warmup_steps if train.warmup_steps >= 0 else min(2000, total // 10)
    if step < warmup:
        return train.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - 1 - warmup)
    return train.lr * (train.min_lr_ratio + (1 - train.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def build_optimizer(model, train, device, n_source: int = 0, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW(beta1, beta2), weight decay on matrices only (norm gains excluded).

    Frozen parts (``train.freeze``) are not in it; every group carries the
    ``lr_mult`` of its part (:func:`lab.finetune.param_groups`). The fused
    kernel on CUDA (``fused`` None: by device; the CPU has one too, which
    tests/test_cuda_paths.py compares with the plain one).

    Example:
        >>> from lab.config import ModelConfig, TrainConfig
        >>> model = MTPModel(ModelConfig(size="custom", d_model=32, layers=2, n_heads=2, vocab_size=50).resolved())
        >>> build_optimizer(model, TrainConfig(), torch.device("cpu")).defaults["fused"]
        False
    """
    groups = finetune.param_groups(model, train, n_source)
    return torch.optim.AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2),
                             fused=device.type == "cuda" if fused is None else fused)


def compile_blocks(model, backend: str = "inductor") -> int:
    """``torch.compile`` every transformer block of ``model`` in place (``train.compile``); returns how many.

    Blocks, not the whole model: the sequential backward calls the trunk and
    the heads separately, and every block has the same shapes, so one graph
    serves them all. (``backend``: the tests trace with ``aot_eager``, which
    skips inductor's code generation, ~45 s on a busy 2-core CPU.)

    Example:
        >>> from lab.config import ModelConfig
        >>> compile_blocks(MTPModel(ModelConfig(size="custom", d_model=32, layers=2, n_heads=2, vocab_size=50).resolved()))
        2
    """
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        block.compile(backend=backend)
    return len(blocks)


def model_config_for(config: RunConfig, n_vocab: int):
    """The model config with the vocabulary filled in: exactly the tokenizer's.

    (Not rounded up for speed: a padded row could be the argmax of greedy
    decoding and no tokenizer could decode it.)
    """
    vocab = config.model.vocab_size or n_vocab
    if vocab < n_vocab:
        raise UserError(f"model.vocab_size {vocab} is smaller than the tokenizer's {n_vocab} tokens")
    return dataclasses.replace(config.model, vocab_size=vocab)


def setup(config: RunConfig, device: torch.device, *, quiet: bool = False, rebuild: bool = False):
    """Task, dataset and (freshly initialised) model for a config, on ``device`` (``rebuild``: the dataset afresh)."""
    task = registry.get(config.task_name)(config.task)
    data = prepare(task, config.train.data_seed, quiet=quiet, rebuild=rebuild)
    torch.manual_seed(config.train.seed)
    model = MTPModel(model_config_for(config, data.enc.n_vocab)).to(device)
    return task, data, model


def load_run(run_dir: Path, device: torch.device | None = None, *, quiet: bool = True):
    """Config, task, dataset and trained model of a run folder (for eval/decode).

    Example:
        >>> load_run(Path("/nonexistent"))
        Traceback (most recent call last):
        ...
        lab.errors.UserError: /nonexistent is not a run folder (no config.json)
    """
    config = ckpt.read_config(run_dir, registry.get)
    device = device or select_device(config.train.device)
    state = ckpt.load_checkpoint(run_dir, map_location=device)
    task, data, model = setup(config, device, quiet=quiet)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint in {run_dir} does not match its config.json ({str(e).splitlines()[0]})") from None
    return config, task, data, model, state


class PlainProgress:
    """The progress bar's stand-in when stderr is not a terminal: a plain line every ``every`` seconds.

    It takes the calls the loop makes on a tqdm bar (``update``,
    ``set_postfix``, ``write``, ``close``) and prints
    ``train: step 120/400 (30%) loss=2.31 acc1=0.41 tok_s=15230``
    at the first step, then at most every ``every`` seconds, and at the end.

    Example:
        >>> bar = PlainProgress(total=4, initial=0, every=3600, file=sys.stdout)
        >>> for _ in range(4):
        ...     bar.update(1)
        train: step 1/4 (25%)
        >>> bar.set_postfix(loss="1.250")
        >>> bar.close()
        train: step 4/4 (100%) loss=1.250
    """

    def __init__(self, total: int, initial: int = 0, every: float = 30.0, file=None):
        self.total, self.n, self.every, self.file = total, initial, every, file
        self.postfix: dict = {}
        self._printed_n, self._printed_at = None, None

    def _say(self) -> None:
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"train: step {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%){extra}",
              file=self.file or sys.stderr, flush=True)
        self._printed_n, self._printed_at = self.n, time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._printed_at is None or time.monotonic() - self._printed_at >= self.every:
            self._say()

    def set_postfix(self, **kwargs) -> None:
        self.postfix = kwargs

    def write(self, msg: str) -> None:
        print(msg, flush=True)

    def close(self) -> None:
        if self._printed_n != self.n:
            self._say()


class TrainingDiverged(UserError):
    """The loss or the gradient norm became NaN or infinite: the run stops, its last good checkpoint kept.

    A UserError (one line, exit status 2; a sweep records the cell as failed
    with this reason and does not retry it: the same config diverges again).
    """


def run_windows(config: RunConfig, data) -> Windows:
    """The training windows of a run (its batch order and held-out windows): a function of config and data."""
    tc = config.train
    return Windows(data.train_tokens, tc.context, config.model.n, tc.seed, data.train_mask, heldout=tc.heldout_windows)


def document_eot(config: RunConfig, data) -> int | None:
    """The end-of-text token that splits a window into documents with ``train.document_mask``; None without it."""
    return data.enc.eot_token if config.train.document_mask else None


def memorization(model, windows: Windows, device, autocast, eot: int | None = None) -> dict:
    """Next-token loss on held-out training-stream windows vs on the first windows trained on.

    In a single pass the gap stays near 0 (every batch is new data when the
    model sees it); a model that memorizes its training split opens it up.
    ``memorization_gap_se`` is its standard error with windows as the
    sampling unit: the two window sets differ by chance, too.
    """
    if not windows.heldout:
        return {}
    model.eval()
    out, per_window = {}, {}
    for name, (tokens, mask) in (("heldout", windows.heldout_batch()), ("seen", windows.seen_batch())):
        sums, counts = [], []
        for i in range(0, len(tokens), 8):
            window = torch.from_numpy(tokens[i:i + 8]).to(device)
            m = torch.from_numpy(mask[i:i + 8]).to(device) if mask is not None else None
            s, c = next_token_nll(model, window, m, autocast=autocast, eot=eot)
            sums += s
            counts += c
        out[f"loss/{name}"] = sum(sums) / max(sum(counts), 1)
        per_window[name] = [s / c for s, c in zip(sums, counts) if c]
    out["memorization_gap"] = out["loss/heldout"] - out["loss/seen"]
    if all(len(v) > 1 for v in per_window.values()):
        out["memorization_gap_se"] = math.sqrt(sum(statistics.variance(v) / len(v) for v in per_window.values()))
    return out


# Metrics every run's evals add to the task's (a name N also covers N/...): sweep specs may choose them as objective.
RUN_METRICS = ("loss/heldout", "loss/seen", "memorization_gap", "memorization_gap_se", "agreement", "future_acc")


def evaluate_run(config: RunConfig, task, data, model, device, *, limit: int | None = None,
                 windows: Windows | None = None, agreement=None, final: bool | None = None) -> dict:
    """The evaluation of a run: every eval during training and ``mtplab eval`` run exactly this.

    The task's metrics on test, and on validation as ``valid/<name>`` (tasks
    with a validation split); for n > 1 the heads' agreement (an estimate of
    self-speculative acceptance, :mod:`lab.speculative`); and the
    memorization check (:func:`memorization`); at the final eval, the
    marginalization baseline (:func:`lab.marginal.future_accuracy` on held-out
    documents, ``train.marginal_positions``). ``limit`` caps the examples
    per slice (None: all, as the final eval). ``final`` says whether this is
    the final eval (default: ``limit is None``; an intermediate eval with
    ``train.eval_examples = 0`` also scores all examples but is not final,
    and skips the costly baseline). ``windows`` and ``agreement`` are derived
    from the config and data when not given.
    """
    metrics = task.evaluate(model, data.test, data.enc, device, limit=limit)
    if data.valid:
        valid = task.evaluate(model, data.valid, data.enc, device, limit=limit)
        metrics.update({f"valid/{k}": v for k, v in valid.items()})
    if config.model.n > 1:
        if agreement is None:
            agreement = agreement_windows(task, data.test, data.enc, config.train.context)
        metrics.update(head_agreement(model, agreement, device))
    if windows is None:
        windows = run_windows(config, data)
    metrics.update(memorization(model, windows, device, autocast_for(device, config.train.dtype),
                                document_eot(config, data)))
    if final is None:
        final = limit is None
    if final and config.train.marginal_positions:  # the final eval: the marginalization baseline
        docs, masks = document_windows(task, data.valid or data.test, data.enc, config.train.context)
        metrics.update(future_accuracy(model, docs, device, ks=(2, 3), mask=masks,
                                       max_positions=config.train.marginal_positions))
    return metrics


def _is_better(value, best, direction: str) -> bool:
    """Whether an eval's value replaces the best so far; a tie goes to the later (more trained) eval.

    With ties kept by the earlier eval, a run whose objective stays at 0 would
    report its first eval's checkpoint; with ties to the later one it reports
    the latest of the tied checkpoints.

    Example:
        >>> _is_better(0.0, 0.0, "maximize"), _is_better(0.1, 0.2, "maximize"), _is_better(0.1, 0.2, "minimize")
        (True, False, True)
    """
    if best is None:
        return True
    return value >= best if direction == "maximize" else value <= best


class _Run:
    """State of one run in progress (kept small: everything else is derived)."""

    def __init__(self, config: RunConfig, run_dir: Path, resume: bool, quiet: bool, rebuild: bool = False,
                 ranks: Ranks = Ranks(), device: torch.device | None = None):
        self.config, self.run_dir, self.quiet = config, run_dir, quiet
        # Under torchrun: this process's rank (rank 0 alone writes the run folder and evaluates) and device.
        self.ranks = ranks
        self.device = device or select_device(config.train.device)
        if config.train.threads > 0:
            torch.set_num_threads(config.train.threads)
        tc = config.train
        # train.init_from: the source is read and checked before anything is built (and before the run
        # folder exists); a resumed run continues from its own checkpoint and only needs its head count.
        self.source = None if resume else finetune.read_source(config, registry.get)
        n_source = self.source.n if self.source else finetune.recorded_source_heads(run_dir) if resume else 0
        with distributed.host_leader_first(ranks):  # one process per host builds the dataset cache
            self.task, self.data, self.model = setup(config, self.device, quiet=quiet, rebuild=rebuild and ranks.local_rank == 0)
        if self.source:
            finetune.load_into(self.model, self.source, tc.init_heads)
        finetune.freeze(self.model, tc, n_source)
        self.weights = finetune.loss_weights_at(config.model, tc, 0)  # per-head loss weights; train_step moves them
        self._trunk_on = True  # whether the trunk's gradients are on now (the head warmup turns them off)
        self.counts = self.model.param_counts()
        self.total = tc.total_steps()
        self.windows = run_windows(config, self.data)
        self.eot = document_eot(config, self.data)  # attention within documents (train.document_mask)
        self.optimizer = build_optimizer(self.model, tc, self.device, n_source)
        self.autocast = autocast_for(self.device, tc.dtype)
        if tc.activation_checkpointing:
            checkpoint_blocks(self.model)
        if tc.compile:
            compile_blocks(self.model)
        self.eval_every = tc.eval_interval or max(1, -(-self.total // 5))  # ceil: no eval right before the final one
        self.ckpt_every = tc.checkpoint_interval or self.eval_every
        self._agreement_windows = None  # test text for the acceptance estimate, tokenized once
        self.step, self.position, self.history, self.best, self.best_by_test = 0, 0, [], None, None
        # checkpoints are chosen on validation when the task has a validation split, else on test (the paper)
        self.selection = f"valid/{self.task.objective}" if self.data.valid else self.task.objective
        self.on_eval = None  # callback(step, objective value) after each eval: sweeps report it to Optuna
        self.finished = False
        # First step whose loss or gradient norm was not finite (0: none), kept on the device so that
        # steps that do not log need no host sync; checked before anything is logged, evaluated or saved.
        self._bad_step = torch.zeros((), dtype=torch.long, device=self.device)
        self._saved_step = 0
        if resume:
            self._restore()
        distributed.broadcast_module(self.model, ranks)  # every rank starts from rank 0's weights (as DDP does)

    # ---- checkpointing ----
    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "step": self.step, "position": self.position, "history": self.history, "best": self.best,
            "best_by_test": self.best_by_test, "finished": self.finished, "rng": ckpt.rng_state(), "config": self.config.to_dict(),
        }

    def _restore(self) -> None:
        state = ckpt.load_checkpoint(self.run_dir, map_location=self.device)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"checkpoint in {self.run_dir} does not match its config ({str(e).splitlines()[0]})") from None
        self.step, self.position = state["step"], state["position"]
        self.history, self.best, self.finished = state["history"], state["best"], state.get("finished", False)
        self.best_by_test = state.get("best_by_test", self.best)
        ckpt.set_rng_state(state["rng"])
        self._saved_step = self.step
        # Drop log lines written after the checkpoint (and a line torn by the crash): they will be
        # written again, identically.
        log = self.run_dir / "metrics.jsonl"
        if log.exists() and self.ranks.main:
            keep = [ln for ln in log.read_text().splitlines() if _step_of(ln) is not None and _step_of(ln) <= self.step]
            ckpt.atomic_replace(log, lambda p: p.write_text("".join(ln + "\n" for ln in keep)))

    # ---- evaluation ----
    def evaluate(self, final: bool) -> dict:
        """Score test (and validation, as ``valid/<name>``), track the selected checkpoints, write eval.json.

        ``best`` is chosen on ``valid/<objective>`` when the task has a
        validation split (never on test); ``best_by_test`` is the paper's
        choice (best test objective over training), kept for comparison.
        """
        limit = None if final else (self.config.train.eval_examples or None)
        t0 = time.time()
        if self.config.model.n > 1 and self._agreement_windows is None:  # tokenized once per run
            self._agreement_windows = agreement_windows(self.task, self.data.test, self.data.enc,
                                                        self.config.train.context)
        metrics = evaluate_run(self.config, self.task, self.data, self.model, self.device, limit=limit, final=final,
                               windows=self.windows, agreement=self._agreement_windows) if self.ranks.main else None
        metrics = distributed.from_main(metrics, self.ranks)  # rank 0 evaluates; the others wait for its result
        self.model.train()
        entry = {"step": self.step, "tokens": self.tokens_seen, "epoch": round(self.windows.epochs(self.position), 4),
                 "metrics": metrics, "eval_seconds": round(time.time() - t0, 2), "final": final}
        self.history.append(entry)
        objective = self.task.objective
        chosen = {"step": self.step, "tokens": self.tokens_seen, "metrics": metrics}
        if objective in metrics and _is_better(metrics[objective], (self.best_by_test or {}).get("metrics", {}).get(objective),
                                               self.task.direction):
            self.best_by_test = chosen
        if self.selection in metrics and _is_better(metrics[self.selection],
                                                    (self.best or {}).get("metrics", {}).get(self.selection),
                                                    self.task.direction):
            self.best = chosen
        if not self.ranks.main:
            return metrics
        ckpt.write_json(self.run_dir / "eval.json", {
            "step": self.step, "metrics": metrics, "final": final, "objective": objective,
            "direction": self.task.direction, "selection": "valid" if self.data.valid else "test",
            "best": self.best, "best_by_test": self.best_by_test,
            "milestones": self.task.milestones(self.history), "history": self.history,
        })
        if self.on_eval is not None:
            self.on_eval(self.step, metrics)
        return metrics

    def memorization(self) -> dict:
        """The memorization check of this run (:func:`memorization`)."""
        return memorization(self.model, self.windows, self.device, self.autocast)

    @property
    def tokens_seen(self) -> int:
        return self.position * self.config.train.context

    # ---- the loop ----
    def train_step(self, log: bool = True) -> dict:
        tc = self.config.train
        lr = lr_at(self.step, self.total, tc)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)  # per-part multiplier (lab.finetune.param_groups)
        if tc.head_warmup_steps and "trunk" not in tc.frozen and self._trunk_on != finetune.trunk_trains(tc, self.step):
            self._trunk_on = not self._trunk_on  # the trunk has no gradient (AdamW skips it) until the warmup ends
            finetune.set_trunk_trainable(self.model, self._trunk_on)
        self.weights = finetune.loss_weights_at(self.config.model, tc, self.step)  # the step's per-head weights
        seqs = tc.seqs_per_step
        micro = tc.micro_batch or seqs
        chunks = [min(micro, seqs - i) for i in range(0, seqs, micro)]  # global micro-batches (all ranks together)
        per_head = {"loss": [], "acc": []} if log else {"loss": []}
        for size in chunks:
            tokens, mask = self.windows.batch(self.position, size)
            # Each head's loss is a mean over the whole micro-batch's targets; a rank trains on its rows of it.
            counts = distributed.target_counts(mask, size, tokens.shape[1], self.config.model.n)
            rows = distributed.shard(size, self.ranks)
            window = torch.from_numpy(tokens[rows]).to(self.device, non_blocking=True)
            mask = torch.from_numpy(mask[rows]).to(self.device, non_blocking=True) if mask is not None else None
            self.position += size
            stats = sequential_backward(self.model, window, mask, scale=size / seqs, autocast=self.autocast,
                                        track_accuracy=log, eot=self.eot, weights=self.weights, counts=counts)
            for key in per_head:
                per_head[key].append(torch.stack(stats[key]) * (size / seqs))
        distributed.all_reduce_gradients(self.model.parameters(), self.ranks)  # the global batch's gradient
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        finite = torch.isfinite(grad_norm) & torch.isfinite(torch.stack(per_head["loss"]).sum())
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._bad_step = torch.where((self._bad_step == 0) & ~finite, self.step, self._bad_step)
        if not log:  # no host sync on steps that do not log
            return {}
        # (2, n): this rank's shares of the per-head loss and accuracy, summed over the ranks
        loss, acc = distributed.all_reduce_sum(torch.stack([torch.stack(per_head[k]).sum(0) for k in ("loss", "acc")]),
                                               self.ranks).tolist()
        return {"lr": lr, "loss": loss, "acc": acc, "grad_norm": float(grad_norm)}

    def check_finite(self) -> None:
        """Stop with one line if a step since the start had a non-finite loss or gradient norm (a host sync)."""
        bad = int(self._bad_step)
        if bad:
            kept = f"the checkpoint of step {self._saved_step} is kept" if self._saved_step else "no checkpoint was written"
            raise TrainingDiverged(
                f"training diverged at step {bad}: the loss or the gradient norm is not finite (nan/inf); nothing "
                f"from that step on was logged or saved ({kept}). Lower train.lr or train.grad_clip, check the "
                f"config (e.g. model.rope_base), and train again")

    def log_line(self, out: dict, tokens_per_s: float) -> dict:
        weights = self.weights  # the step's weights (train.loss_weight_anneal_steps moves them)
        row = {"step": self.step, "tokens": self.tokens_seen, "epoch": round(self.windows.epochs(self.position), 4),
               "lr": out["lr"], "loss": sum(w * l for w, l in zip(weights, out["loss"])),
               "grad_norm": out["grad_norm"], "tokens_per_s": round(tokens_per_s, 1)}
        if self.config.train.loss_weight_anneal_steps:
            row["loss_weights"] = list(weights)
        for i, (l, a) in enumerate(zip(out["loss"], out["acc"]), start=1):
            row[f"loss/head={i}"], row[f"acc/head={i}"] = l, a
        if self.ranks.main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        return row

    def loop(self) -> None:
        tc = self.config.train
        bar = None
        if tc.progress and not self.quiet:
            if sys.stderr.isatty():
                from tqdm import tqdm

                bar = tqdm(total=self.total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
            else:  # a log file or a pipe: a line now and then, not thousands of carriage-return updates
                bar = PlainProgress(total=self.total, initial=self.step)
        try:
            self._loop(bar)
        finally:
            if bar:
                bar.close()

    def _loop(self, bar) -> None:
        tc = self.config.train
        self.model.train()
        t_last, tok_last = time.time(), self.tokens_seen
        while self.step < self.total:
            logs = (self.step + 1) % tc.log_interval == 0 or self.step + 1 == self.total
            out = self.train_step(log=logs)
            last = self.step == self.total
            if logs or last or self.step % self.eval_every == 0 or self.step % self.ckpt_every == 0:
                self.check_finite()  # before a NaN reaches the log, eval.json or a checkpoint
            if logs:
                now = time.time()
                row = self.log_line(out, (self.tokens_seen - tok_last) / max(now - t_last, 1e-9))
                if bar:
                    bar.set_postfix(loss=f"{row['loss']:.3f}", acc1=f"{row['acc/head=1']:.3f}",
                                    tok_s=f"{row['tokens_per_s']:.0f}")
                t_last, tok_last = now, self.tokens_seen
            if bar:
                bar.update(1)
            evaluated = False
            if self.step % self.eval_every == 0 or last:
                metrics = self.evaluate(final=last)
                evaluated = True
                if bar:
                    bar.write(f"step {self.step}: {self.task.objective} = {metrics.get(self.task.objective, float('nan')):.4f}")
                self.finished = last
                t_last, tok_last = time.time(), self.tokens_seen  # eval time and the tokens before it are not a rate
            if self.step % self.ckpt_every == 0 or last or evaluated:
                if self.ranks.main:
                    ckpt.save_checkpoint(self.run_dir, self._state())
                self._saved_step = self.step


def _step_of(line: str) -> int | None:
    """The step of a metrics.jsonl line, or None for a line torn by a crash."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def run(config: RunConfig, run_dir: str | Path, *, quiet: bool = False, on_eval=None, rebuild: bool = False) -> dict:
    """Train ``config`` into the new run folder ``run_dir``; returns the run's summary.

    ``run_dir`` must not hold a run already (UserError; :func:`resume`
    continues one). ``on_eval(step, metrics)`` is called after every eval
    (sweeps report the objective to Optuna as an intermediate value).
    ``rebuild`` builds the dataset cache entry afresh (:func:`lab.data.prepare`).

    A run whose loss or gradient norm turns NaN/inf stops with
    :class:`TrainingDiverged` (a UserError naming the step); its last
    checkpoint, written before, is kept.

    Example:
        >>> import tempfile
        >>> from lab.config import build_run_config
        >>> folder = Path(tempfile.mkdtemp()); _ = (folder / "config.json").write_text("{}")
        >>> run(build_run_config(registry.get("polyarith"), {}), folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lab.errors.UserError: ... already holds a run; use --resume to continue it or choose another --out
    """
    return _train(config, Path(run_dir), resume=False, quiet=quiet, on_eval=on_eval, rebuild=rebuild)


def resume(run_dir: str | Path, *, quiet: bool = False, on_eval=None, rebuild: bool = False) -> dict:
    """Continue the run in ``run_dir`` from its checkpoint, with the config stored there; returns its summary.

    A finished run is only summarised. A run killed before its first
    checkpoint starts again from step 0 (its log and evals afresh). Options
    as for :func:`run`.

    Example:
        >>> resume("/nonexistent")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: /nonexistent is not a run folder (no config.json)
    """
    return _train(None, Path(run_dir), resume=True, quiet=quiet, on_eval=on_eval, rebuild=rebuild)


def _train(config: RunConfig | None, run_dir: Path, *, resume: bool, quiet: bool, on_eval, rebuild: bool) -> dict:
    ranks = Ranks.from_env()  # one process, or this one's place in a torchrun job (lab.distributed)
    if resume:
        config = ckpt.read_config(run_dir, registry.get)
    elif (run_dir / "config.json").exists() or (run_dir / ckpt.CHECKPOINT).exists():
        raise UserError(f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
    elif run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} exists and is not a folder")
    distributed.check_batch(config.train, ranks.world)
    device = distributed.place(select_device(config.train.device), ranks)
    with distributed.process_group(ranks, device):
        summary = _train_ranks(config, run_dir, resume=resume, quiet=quiet or not ranks.main, on_eval=on_eval,
                               rebuild=rebuild, ranks=ranks, device=device)
        distributed.barrier(ranks)  # the job ends when rank 0 has written everything
    return summary


def _train_ranks(config: RunConfig, run_dir: Path, *, resume: bool, quiet: bool, on_eval, rebuild: bool,
                 ranks: Ranks, device: torch.device) -> dict:
    """The run, in each of its processes (one unless under torchrun)."""
    if resume and not (run_dir / ckpt.CHECKPOINT).exists():
        # Killed before its first checkpoint: start again from step 0 with the same config, and
        # the log and evals afresh (the steps they hold are trained again).
        resume = False
        distributed.barrier(ranks)  # every rank has seen that there is no checkpoint before rank 0 clears the log
        for name in ("metrics.jsonl", "eval.json"):
            if ranks.main:
                (run_dir / name).unlink(missing_ok=True)
    t0 = time.time()
    r = _Run(config, run_dir, resume=resume, quiet=quiet, rebuild=rebuild, ranks=ranks, device=device)
    r.on_eval = on_eval if ranks.main else None
    if not quiet:
        c = r.counts
        print(f"model: {config.model.size} d_model={config.model.d_model} layers={config.model.layers} "
              f"(trunk {config.model.trunk_layers} + {config.model.n} {config.model.head_kind} heads) | "
              f"parameters: {c['total']:,} total, {c['non_embedding']:,} non-embedding | device {r.device}"
              f"{f' x {ranks.world} processes' if ranks.world > 1 else ''} | "
              f"{r.total} steps x {config.train.seqs_per_step * config.train.context:,} tokens", flush=True)
        if r.source:
            print(f"init from {r.source.run_dir} (step {r.source.step}, n={r.source.n}): {config.model.n - r.source.n} "
                  f"heads added ({config.train.init_heads}); frozen: {','.join(sorted(config.train.frozen)) or 'none'}",
                  flush=True)
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if ranks.main and not (run_dir / "config.json").exists():
        data = config.to_dict()
        data["meta"] = {"env": ckpt.environment(), "params": r.counts, "dataset": str(r.data.path),
                        "vocab_size": r.model.config.vocab_size, "processes": ranks.world}
        if r.source:  # where the run's weights came from (train.init_from as given is in data["train"])
            data["meta"]["init_from"] = r.source.meta()
        ckpt.write_json(run_dir / "config.json", data)
    if not r.finished:
        r.loop()
    final = r.history[-1] if r.history else {"metrics": {}}
    return {
        "step": r.step, "tokens_seen": r.tokens_seen, "metrics": final["metrics"], "best": r.best,
        "best_by_test": r.best_by_test, "milestones": r.task.milestones(r.history), "selection": r.selection,
        "objective": r.task.objective, "direction": r.task.direction, "params": r.counts,
        "device": str(r.device), "wall_seconds": round(time.time() - t0, 2), "run_dir": str(run_dir),
        "rank": ranks.rank, "processes": ranks.world,
    }
