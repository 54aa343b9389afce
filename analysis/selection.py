"""Which checkpoint, and which run of a swept hyperparameter, the figures and the report show.

Three choices are made here, in this order, on the loaded frame
(:mod:`analysis.loader`):

1. :func:`choose_checkpoint`: the final checkpoint, the one each run selected
   (``best:`` columns; on the validation objective ``valid/<objective>``
   when the task has a validation split), or the one best on the test
   objective (``best_by_test:``; the paper's choice).
2. :func:`select_best`: with ``--select-best KEY`` (e.g. ``train.lr``), per
   group of cells equal in every other swept key, the one run whose
   validation objective at its selected checkpoint is best (zoology-style
   "best of K learning rates").
3. :func:`variant_keys`: swept keys other than n, size and seed that still
   vary (an lr sweep without ``--select-best``); each value is then its own
   series: its own rows in the report's tables, its own set of figures.

Example:
    >>> import pandas as pd
    >>> f = pd.DataFrame({"n": [1, 1], "size": ["1M"] * 2, "seed": [0, 0], "train.lr": [1e-3, 3e-3],
    ...                   "best:valid/acc": [0.2, 0.4], "best:acc": [0.25, 0.35]})
    >>> best, note = select_best(f, "train.lr", ["model.n", "train.lr"], "acc")
    >>> best["train.lr"].tolist(), note
    ([0.003], 'best of 2 learning rates per (n, size, seed), chosen on validation')
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.loader import BEST, BY_TEST
from lab.errors import UserError

CHECKPOINTS = ("auto", "final", "best", "best-by-test")
# Swept keys that are the figures' own axes: n, size (and the shape fields that make a custom size), seed.
CORE = {"model.n": "n", "n": "n", "model.size": "size", "size": "size", "model.d_model": "size",
        "model.layers": "size", "model.n_heads": "size", "train.seed": "seed", "seed": "seed"}
NOUNS = {"train.lr": "learning rates", "lr": "learning rates"}


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint whose metrics are shown: ``which`` for :func:`analysis.loader.with_metrics`, and a label."""

    which: str
    label: str


def _has(frame: pd.DataFrame, prefix: str) -> bool:
    return any(c.startswith(prefix) and frame[c].notna().any() for c in frame.columns)


def valid_column(objective: str | None) -> str:
    """The column that ranks runs on validation: the validation objective at each run's selected checkpoint.

    Example:
        >>> valid_column("accuracy/in_domain")
        'best:valid/accuracy/in_domain'
    """
    return f"{BEST}valid/{objective}"


def choose_checkpoint(frame: pd.DataFrame, which: str, *, task: str = "", objective: str | None = None,
                      study: str = "") -> Checkpoint:
    """The checkpoint for ``--checkpoint which`` (auto, final, best, best-by-test); UserError if it is not stored.

    ``auto`` is the validation-selected checkpoint when the runs have one,
    else (older studies) the best checkpoint for induction (selected on test,
    as the paper reports it) and the final one otherwise.

    Example:
        >>> f = pd.DataFrame({"best:valid/acc": [0.3], "best:acc": [0.2], "best_by_test:acc": [0.25]})
        >>> choose_checkpoint(f, "auto", objective="acc").label
        'checkpoint chosen on validation (valid/acc)'
        >>> mixed = pd.DataFrame({"best:valid/acc": [0.3, None], "best:acc": [0.2, 0.4]})
        >>> choose_checkpoint(mixed, "auto", objective="acc").label
        'checkpoint chosen on validation (valid/acc); 1 run(s) without a validation split: best by the test objective'
        >>> choose_checkpoint(f, "best-by-test", objective="acc").label
        'best checkpoint by the test objective (paper-faithful: selected on test)'
        >>> choose_checkpoint(pd.DataFrame({"acc": [0.2]}), "best", study="s")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: study 's' stores no best-checkpoint metrics; use --checkpoint final
    """
    on_valid = objective is not None and valid_column(objective) in frame and frame[valid_column(objective)].notna().any()
    has_best, has_by_test = _has(frame, BEST), _has(frame, BY_TEST)
    paper = "best checkpoint by the test objective (paper-faithful: selected on test)"
    if which == "auto":
        which = "best" if on_valid or (task == "induction" and has_best) else "final"
    if which == "final":
        return Checkpoint("final", "final checkpoint")
    if which == "best":
        if not has_best:
            raise UserError(f"study '{study}' stores no best-checkpoint metrics; use --checkpoint final")
        if on_valid:
            label = f"checkpoint chosen on validation (valid/{objective})"
            best_cols = [c for c in frame.columns if c.startswith(BEST)]
            legacy = int((frame[valid_column(objective)].isna() & frame[best_cols].notna().any(axis=1)).sum())
            if legacy:
                label += f"; {legacy} run(s) without a validation split: best by the test objective"
            return Checkpoint("best", label)
        label = ("best checkpoint by the test objective (as the paper reports induction; these runs have no "
                 "validation split)")
        return Checkpoint("best", label)
    if which == "best-by-test":
        if has_by_test:
            return Checkpoint("best-by-test", paper)
        if has_best and not on_valid:  # older runs: their best checkpoint was chosen on test
            return Checkpoint("best", paper)
        raise UserError(f"study '{study}' stores no test-selected checkpoint metrics (best_by_test_metrics); "
                        "use --checkpoint best or final")
    raise UserError(f"unknown checkpoint '{which}'; choose one of {', '.join(CHECKPOINTS)}")


def _short(key: str) -> str:
    return CORE.get(key, key)


def resolve_key(key: str, swept: list) -> str:
    """The swept key ``key`` names: itself, or the one swept key whose last dotted part it is (``lr``).

    Example:
        >>> resolve_key("lr", ["model.n", "train.lr"]), resolve_key("train.lr", ["train.lr"])
        ('train.lr', 'train.lr')
        >>> resolve_key("train.warmup", ["model.n", "train.lr"])
        Traceback (most recent call last):
        ...
        lab.errors.UserError: --select-best train.warmup: not a swept key of this study (swept: model.n, train.lr)
    """
    if key in swept:
        return key
    tails = [k for k in swept if k.split(".")[-1] == key]
    if len(tails) == 1:
        return tails[0]
    raise UserError(f"--select-best {key}: not a swept key of this study (swept: {', '.join(swept) or 'none'})")


def _group_keys(frame: pd.DataFrame, key: str, swept: list) -> list[str]:
    """Columns that define the groups: every other swept key, and n, size and seed always."""
    out = [k for k in swept if k != key and k in frame]
    return out + [c for c in ("n", "size", "seed") if c in frame and c not in out]


def select_best(frame: pd.DataFrame, key: str, swept: list, objective: str | None,
                direction: str = "maximize") -> tuple[pd.DataFrame, str]:
    """Per group of runs equal in every other swept key, the run whose validation objective is best.

    The ranking column is ``best:valid/<objective>`` (the validation
    objective at each run's selected checkpoint). Returns the selected rows
    (with ``selected_from``: how many runs the group had) and the sentence
    for captions and the report. UserError if ``key`` is not swept or a run
    lacks the validation metric.

    Example:
        >>> f = pd.DataFrame({"n": [1, 1, 2, 2], "train.lr": [1e-3, 3e-3] * 2, "acc": [0.1] * 4,
        ...                   "best:valid/acc": [0.2, 0.4, 0.5, 0.3]})
        >>> best, _ = select_best(f, "lr", ["model.n", "train.lr"], "acc")
        >>> best[["n", "train.lr", "selected_from"]].values.tolist()
        [[1.0, 0.003, 2.0], [2.0, 0.001, 2.0]]
        >>> select_best(f.drop(columns="best:valid/acc"), "train.lr", ["train.lr"], "acc")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: --select-best train.lr needs the validation objective valid/acc at each run's selected checkpoint, and 4 of 4 runs lack it (their task has no validation split, or they ran before validation was added)
    """
    key = resolve_key(key, list(swept))
    if key not in frame:
        raise UserError(f"--select-best {key}: the runs do not record {key}")
    column = valid_column(objective)
    have = frame[column].notna() if column in frame else pd.Series(False, index=frame.index)
    if not have.all():
        raise UserError(f"--select-best {key} needs the validation objective valid/{objective} at each run's "
                        f"selected checkpoint, and {int((~have).sum())} of {len(frame)} runs lack it (their task has "
                        "no validation split, or they ran before validation was added)")
    groups = _group_keys(frame, key, list(swept))
    ranked = frame.assign(_v=frame[column] if direction != "minimize" else -frame[column])
    ranked = ranked.sort_values("_v", ascending=False, kind="stable")  # ties: the earlier row
    if groups:
        sizes = frame.groupby(groups, dropna=False, sort=False)[key].transform("size")
        ranked = ranked.assign(selected_from=sizes.loc[ranked.index])
        best = ranked.drop_duplicates(groups, keep="first")
    else:
        best = ranked.head(1).assign(selected_from=len(frame))
    best = best.drop(columns="_v").loc[sorted(best.index)].reset_index(drop=True)
    counts = sorted({int(c) for c in best["selected_from"]})
    k = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    noun = NOUNS.get(key, f"values of {key}")
    names = ", ".join(dict.fromkeys(_short(g) for g in groups)) or "study"
    return best, f"best of {k} {noun} per ({names}), chosen on validation"


def variant_keys(frame: pd.DataFrame, swept: list, exclude=()) -> list[str]:
    """Swept keys other than n, size and seed (and ``exclude``) that take several values among the runs.

    Example:
        >>> f = pd.DataFrame({"model.n": [1, 2], "train.lr": [1e-3, 3e-3], "train.seed": [0, 0]})
        >>> variant_keys(f, ["model.n", "train.lr", "train.seed"]), variant_keys(f, ["train.lr"], ["train.lr"])
        (['train.lr'], [])
    """
    return [k for k in swept if k not in CORE and k not in exclude and k in frame
            and frame[k].astype(str).nunique() > 1]


def with_variant(frame: pd.DataFrame, keys: list) -> pd.DataFrame:
    """The frame with a ``variant`` column (``train.lr=0.001``) naming each run's values of ``keys``.

    Example:
        >>> with_variant(pd.DataFrame({"train.lr": [0.001, 0.003]}), ["train.lr"])["variant"].tolist()
        ['train.lr=0.001', 'train.lr=0.003']
    """
    if not keys:
        return frame
    def name(row):
        return ",".join(f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys)
    return frame.assign(variant=frame.apply(name, axis=1))
