"""Short names for the config fields set most often: the one table behind ``mtplab train``'s flags and sweep specs.

``mtplab train --lr 1e-3`` and a sweep spec's ``grid: {lr: [1e-3]}`` both
mean ``train.lr``. The training command takes each name as a flag
(``--batch-tokens``); a spec takes it as a key in ``grid:`` and ``fixed:``,
and the names in :data:`BUDGET` under ``budget:``. Any other field is
reached by its dotted name (``--set model.d_model=256``, ``fixed:
{model.d_model: 256}``).

Example:
    >>> SHORTHANDS["lr"], expand("n"), expand("model.d_model")
    ('train.lr', 'model.n', 'model.d_model')
    >>> [SHORTHANDS[k] for k in BUDGET][:2]
    ['train.tokens', 'train.steps']
"""

from __future__ import annotations

SHORTHANDS = {
    "size": "model.size", "n": "model.n", "head_kind": "model.head_kind", "heads_on_top": "model.heads_on_top",
    "loss_weights": "model.loss_weights", "tokens": "train.tokens", "steps": "train.steps",
    "batch_tokens": "train.batch_tokens", "micro_batch": "train.micro_batch", "context": "train.context",
    "lr": "train.lr", "seed": "train.seed", "data_seed": "train.data_seed", "device": "train.device",
    "eval_interval": "train.eval_interval", "eval_examples": "train.eval_examples",
    "warmup_steps": "train.warmup_steps", "dtype": "train.dtype", "init_from": "train.init_from",
    "freeze": "train.freeze",
}

# The names a sweep spec's `budget:` takes: the training budget and what sets its scale.
BUDGET = ("tokens", "steps", "batch_tokens", "context", "lr", "warmup_steps", "micro_batch")


def expand(key: str) -> str:
    """The dotted config field a short name stands for; any other key comes back as it is.

    Example:
        >>> expand("seed"), expand("task.seed")
        ('train.seed', 'task.seed')
    """
    return SHORTHANDS.get(key, key)


__all__ = ["SHORTHANDS", "BUDGET", "expand"]
