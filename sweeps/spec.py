"""Sweep specs: a YAML file -> a validated, frozen :class:`SweepSpec` -> grid cells.

A spec names the task and its arguments, the grid, the training budget, the
objective and the storage (the full annotated format is in
``sweeps/README.md``)::

    description: polyarith, n in {1, 2, 4} at 1M; 4M tokens per cell
    task: {name: polyarith, test_per_op: 200}   # or just `task: polyarith`
    grid:                  # the cross product of these lists is the set of cells
      n: [1, 2, 4]         # shorthand for model.n (also: size, seed, lr, ...: lab/shorthands.py)
      model.size: [1M]     # or any config field by its dotted name
    budget: {tokens: 4e6, batch_tokens: 8192, context: 256, lr: 1e-3}
    fixed: {train.eval_examples: 20}           # every other config field, dotted
    objective: accuracy/in_domain                # default: the task's own
    storage: null          # default: runs/<study>/journal.log (no server)
    search:                # optional: Optuna picks continuous fields
      trials: 4            # trials per cell
      space: {train.lr: {low: 1e-4, high: 3e-3, log: true}}

Validation happens here, before any storage is touched: an unknown key, a bad
value or a malformed file raises a :class:`~lab.errors.UserError` whose one
line names the file and the key. Every grid cell is built into a RunConfig with
:func:`lab.config.build_run_config`, so a cell that cannot train (n=4 on a
3-layer model) is refused up front.

Example:
    >>> import tempfile, textwrap
    >>> p = Path(tempfile.mkdtemp()) / "demo.yaml"
    >>> _ = p.write_text(textwrap.dedent('''
    ...     task: polyarith
    ...     grid: {n: [1, 2], seed: [0]}
    ...     budget: {steps: 3}
    ... '''))
    >>> spec = load_spec(p)
    >>> spec.study, spec.objective, [c.key for c in cells(spec)]
    ('demo', 'accuracy/in_domain', ['n=1,seed=0', 'n=2,seed=0'])
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lab.errors import UserError
from lab.fields import build_dataclass
from lab.shorthands import BUDGET, SHORTHANDS, expand

# `budget:` keys -> train fields (the training budget and what sets its scale); `grid:`, `fixed:` and
# `search.space:` take every short name of the one table (lab/shorthands.py) or a dotted key.
BUDGET_KEYS = {name: SHORTHANDS[name] for name in BUDGET}
SAMPLERS = ("tpe", "random")
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SearchSection:
    """``search:`` as written: trials per cell, Optuna's sampler and its seed, and the space."""

    trials: int | None = None  # required with a space; 1 without
    sampler: str = "tpe"
    seed: int = 0
    space: dict[str, Any] = field(default_factory=dict)  # dotted key -> {low, high, log, int} or {choices}


@dataclass(frozen=True)
class SpecFile:
    """A spec file's top-level keys as written, typed by the config builder (:func:`lab.fields.build_dataclass`).

    The same builder reads run configs: unknown keys and wrong types are refused
    the same way. The sections that hold config keys (``grid``, ``budget``,
    ``fixed``, ``search.space``) are then typed key by key against the run
    config's dataclasses, and the cross-field checks run on the result
    (:func:`load_spec`).

    Example:
        >>> from lab.fields import build_dataclass
        >>> build_dataclass(SpecFile, {"task": "polyarith", "grid": {"n": [1]}}, "").max_retries
        2
    """

    task: Any = None  # a name, or {name: ..., <task field>: value, ...}
    grid: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    study: str | None = None  # default: the file's stem
    budget: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    objective: str | None = None  # default: the task's own
    direction: str | None = None
    storage: str | None = None  # default: runs/<study>/journal.log
    search: dict[str, Any] = field(default_factory=dict)
    max_retries: int = 2  # a cell that fails is tried at most 1 + max_retries times
    heartbeat_seconds: int = 10  # how often a running trial says it is alive
    grace_seconds: int = 120  # a running trial silent for this long is stale and retried


TOP_KEYS = tuple(f.name for f in fields(SpecFile))
SEARCH_KEYS = tuple(f.name for f in fields(SearchSection))


@dataclass(frozen=True)
class SearchParam:
    """One field Optuna's sampler picks: a float/int range or a list of choices."""

    name: str  # dotted config key, e.g. "train.lr"
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def distribution(self):
        """The Optuna distribution of this parameter.

        Example:
            >>> SearchParam("train.lr", "float", 1e-4, 1e-2, log=True).distribution()
            FloatDistribution(high=0.01, log=True, low=0.0001, step=None)
        """
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return CategoricalDistribution(self.choices)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec (see the module docstring and sweeps/README.md).

    ``fixed`` merges the task arguments, the budget and ``fixed:`` into dotted
    config keys; ``grid`` maps dotted keys to their (typed) values, in the
    order the file gives them.
    """

    path: str
    study: str
    task: str
    grid: dict[str, list]
    fixed: dict[str, Any]
    objective: str
    direction: str
    description: str = ""
    storage: str | None = None
    search: tuple[SearchParam, ...] = ()
    trials: int = 1  # trials per cell (more than 1 only with a search space)
    sampler: str = "tpe"
    sampler_seed: int = 0
    max_retries: int = 2  # a cell that fails is tried at most 1 + max_retries times
    heartbeat_seconds: int = 10  # how often a running trial says it is alive
    grace_seconds: int = 120  # a running trial silent for this long is stale and retried
    short_names: dict[str, str] = field(default_factory=dict)  # dotted key -> name in cell keys

    def to_dict(self) -> dict:
        """The normalised spec, as stored in the study's ``spec`` user attribute.

        Example:
            >>> s = SweepSpec("x.yaml", "x", "polyarith", {"model.n": [1, 2]}, {}, "accuracy/in_domain", "maximize")
            >>> s.to_dict()["grid"]
            {'model.n': [1, 2]}
        """
        return {
            "description": self.description, "study": self.study, "task": self.task, "grid": _jsonable(self.grid),
            "fixed": _jsonable(self.fixed), "objective": self.objective, "direction": self.direction,
            "search": {"trials": self.trials, "sampler": self.sampler, "seed": self.sampler_seed,
                       "space": {p.name: _search_dict(p) for p in self.search}},
            "max_retries": self.max_retries, "storage": self.storage,
        }

    def identity(self) -> dict:
        """What must not change for an existing study: everything a finished cell's result depends on.

        The grid may grow (new values on its axes: new cells are queued) and
        ``search.trials`` may rise; anything else changing (a new axis included,
        which renames every cell) would mix incomparable trials in one study.

        Example:
            >>> s = SweepSpec("x.yaml", "x", "polyarith", {"model.n": [1, 2]}, {"train.lr": 0.001}, "o", "maximize")
            >>> sorted(s.identity())
            ['direction', 'fixed', 'grid_keys', 'objective', 'search_space', 'task']
        """
        d = self.to_dict()
        return {"task": d["task"], "fixed": d["fixed"], "objective": d["objective"], "direction": d["direction"],
                "search_space": d["search"]["space"], "grid_keys": list(self.grid)}


@dataclass(frozen=True)
class Cell:
    """One unit of work: a grid cell (and, with a search space, a trial index in it).

    ``key`` names the grid cell (``n=2,size=1M,seed=0``); ``run_key`` names
    the unit and its run folder (the cell key, plus ``,trial=i`` when a cell
    has several search trials).
    """

    values: dict[str, Any]  # dotted key -> typed value
    key: str
    index: int = 0
    run_key: str = ""

    def overrides(self, spec: SweepSpec) -> dict[str, Any]:
        """The dotted overrides that build this cell's RunConfig (search params aside).

        Example:
            >>> s = SweepSpec("x.yaml", "x", "polyarith", {"model.n": [2]}, {"train.lr": 0.001}, "o", "maximize")
            >>> cells(s)[0].overrides(s)
            {'train.lr': 0.001, 'model.n': 2}
        """
        return {**spec.fixed, **self.values}


# ---------------- loading and validation ----------------

def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _search_dict(p: SearchParam) -> dict:
    if p.kind == "categorical":
        return {"choices": list(p.choices)}
    return {"low": p.low, "high": p.high, "log": p.log, **({"int": True} if p.kind == "int" else {})}


def _number(value, where: str, fail) -> float:
    if isinstance(value, bool):
        fail(where, f"expected a number, got {value!r}")
    try:
        f = float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        fail(where, f"expected a number, got {value!r}")
    if not math.isfinite(f):
        fail(where, f"expected a finite number, got {value!r}")
    return f


def _dotted(key: Any, where: str, fail) -> str:
    if not isinstance(key, str) or not key.strip():
        fail(where, f"bad key {key!r}")
    key = expand(key)
    head, _, rest = key.partition(".")
    if head not in ("task", "model", "train") or not rest or "." in rest:
        fail(f"{where}.{key}", f"unknown key '{key}'; use task.<field>, model.<field>, train.<field> "
                               f"or a shorthand ({', '.join(SHORTHANDS)})")
    return key


def _format_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(_format_value(v) for v in value)
    return str(value)


def format_key(values: dict[str, Any], short: dict[str, str]) -> str:
    """The cell key: ``name=value`` pairs in grid order, safe as a folder name.

    Example:
        >>> format_key({"model.n": 2, "model.size": "1M", "train.lr": 0.001}, {"model.n": "n", "model.size": "size"})
        'n=2,size=1M,train.lr=0.001'
    """
    parts = []
    for k, v in values.items():
        text = re.sub(r"[^A-Za-z0-9._+-]", "_", _format_value(v))
        parts.append(f"{short.get(k, k)}={text}")
    return ",".join(parts) or "default"


def short_names(keys: list[str]) -> dict[str, str]:
    """Dotted key -> the name used in cell keys: the field name, unless two keys share it.

    Example:
        >>> short_names(["model.n", "train.seed", "task.seed"])
        {'model.n': 'n', 'train.seed': 'train.seed', 'task.seed': 'task.seed'}
    """
    last = [k.partition(".")[2] for k in keys]
    return {k: (name if last.count(name) == 1 else k) for k, name in zip(keys, last)}


def _typed(task: str, key: str, value, fail, where: str):
    """Check one override's name and type against the config dataclasses; return the typed value.

    Cross-field rules (n vs layers, batch vs context) are checked per cell later.
    """
    from generators import registry
    from lab.config import ModelConfig, TrainConfig

    section, _, name = key.partition(".")
    cls = {"task": registry.get(task).Config, "model": ModelConfig, "train": TrainConfig}[section]
    try:
        obj = build_dataclass(cls, {name: value}, where=section)
    except UserError as e:
        fail(where, str(e))
    typed = getattr(obj, name)
    return list(typed) if isinstance(typed, tuple) else typed


def load_spec(path: str | Path, *, study: str | None = None) -> SweepSpec:
    """Read and validate a spec file; a one-line UserError (file + key) on any problem.

    A bare name (``quickstart``) that is not a file is looked up among the
    ready-made specs shipped in this folder. The steps, in order: the YAML
    file into a :class:`SpecFile` (the config builder: unknown keys and types),
    the task, the config keys typed against the run config's dataclasses
    (:func:`_overrides`), the objective, the search space, the remaining
    scalar checks, then every grid cell built into a RunConfig.

    Example:
        >>> load_spec("quickstart").task
        'polyarith'
        >>> load_spec("/nonexistent.yaml")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: /nonexistent.yaml: no such spec file
    """
    p, raw = _read_yaml(path)

    def fail(key: str, msg: str):
        raise UserError(f"{path}: {key}: {msg}" if key else f"{path}: {msg}")

    if not isinstance(raw, dict):
        fail("", "a spec must be a YAML mapping with at least `task:` and `grid:`")
    try:
        top = build_dataclass(SpecFile, raw, "", what="key")
        search_sec = build_dataclass(SearchSection, top.search, "search", what="key")
    except UserError as e:
        fail("", str(e))
    name, task_args = _task(top, fail)
    grid, fixed, sources = _overrides(top, name, task_args, fail)

    from generators import registry

    task_cls = registry.get(name)
    objective = top.objective or task_cls.objective
    direction = top.direction
    if direction is None:
        if objective != task_cls.objective:
            fail("direction", f"objective '{objective}' is not {name}'s default ({task_cls.objective}); "
                              f"say direction: maximize or minimize")
        direction = task_cls.direction
    if direction not in ("maximize", "minimize"):
        fail("direction", f"expected maximize or minimize, got {direction!r}")

    search = _search_space(search_sec.space, name, grid, fixed, sources, fail)
    trials = search_sec.trials if search_sec.trials is not None else (None if search else 1)
    if trials is None:
        fail("search.trials", "say how many trials per cell the sampler gets, e.g. trials: 4")
    if trials < 1:
        fail("search.trials", f"expected a positive integer, got {trials!r}")
    if trials > 1 and not search:
        fail("search.trials", "several trials per cell need a search space (search.space)")
    if search_sec.sampler not in SAMPLERS:
        fail("search.sampler", f"unknown sampler {search_sec.sampler!r}; choose {' or '.join(SAMPLERS)}")

    if top.storage is not None and not top.storage.strip():
        fail("storage", f"expected a URL (postgresql://...) or a file path, got {top.storage!r}")
    study_name = study or top.study or p.stem
    if not STUDY_NAME.match(study_name):
        fail("study", f"bad study name {study_name!r}: letters, digits, '.', '_' and '-' only")
    for k, low in (("max_retries", 0), ("heartbeat_seconds", 1), ("grace_seconds", 2)):
        if getattr(top, k) < low:
            fail(k, f"expected an integer >= {low}, got {getattr(top, k)!r}")
    if top.grace_seconds <= top.heartbeat_seconds:
        fail("grace_seconds", f"must exceed heartbeat_seconds ({top.heartbeat_seconds})")

    spec = SweepSpec(
        path=str(p), study=study_name, task=name, grid=grid, fixed=fixed, objective=objective,
        direction=direction, description=(top.description or "").strip(), storage=top.storage, search=tuple(search),
        trials=trials, sampler=search_sec.sampler, sampler_seed=search_sec.seed, short_names=short_names(list(grid)),
        max_retries=top.max_retries, heartbeat_seconds=top.heartbeat_seconds, grace_seconds=top.grace_seconds)
    _check_cells(spec, task_cls, fail)
    return spec


def _read_yaml(path: str | Path) -> tuple[Path, Any]:
    """The spec file (or a shipped spec by bare name) and its parsed YAML; one-line errors."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise UserError(f"{path} is a folder; give a sweep spec file (YAML), e.g. sweeps/quickstart.yaml")
    if not p.is_file():
        shipped = Path(__file__).resolve().parent / f"{p.name}{'' if p.suffix else '.yaml'}"
        if p.parent == Path(".") and shipped.is_file():
            p = shipped
        else:
            raise UserError(f"{path}: no such spec file")
    if p.suffix in (".log", ".db", ".sqlite", ".sqlite3", ".journal"):
        raise UserError(f"{path} is not a sweep spec (.yaml); for a storage use --storage {path} --study NAME")
    try:
        return p, yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}: malformed YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None


def _task(top: SpecFile, fail) -> tuple[str, dict[str, Any]]:
    """The task's name (registered here) and its arguments from ``task:``."""
    task_args: dict[str, Any] = {}
    if isinstance(top.task, dict):
        task_args = dict(top.task)
        name = task_args.pop("name", None)
    else:
        name = top.task
    if not isinstance(name, str) or not name:
        fail("task", "name the task, e.g. `task: polyarith` or `task: {name: polyarith, test_per_op: 200}`")
    from generators import registry

    try:
        registry.get(name)
    except UserError as e:
        fail("task", f"task '{name}' is not registered ({e})")
    except Exception as e:  # a task module that fails to import is still "not usable here"
        fail("task", f"task '{name}' is not registered (importing it failed: {e.__class__.__name__}: {e})")
    return name, task_args


def _overrides(top: SpecFile, name: str, task_args: dict, fail) -> tuple[dict[str, list], dict[str, Any], dict[str, str]]:
    """(grid, fixed, where each fixed key was set): dotted keys with values typed by the run config's dataclasses.

    ``fixed`` merges the task arguments, the budget and ``fixed:``; a key set
    twice, or both swept and fixed, is refused naming both places.
    """
    fixed: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def put(key: str, value, where: str):
        if key in fixed:
            fail(where, f"'{key}' is already set by {sources[key]}")
        fixed[key], sources[key] = value, where

    for k, v in task_args.items():
        put(_dotted(f"task.{k}", "task", fail), v, f"task.{k}")
    for k, v in top.budget.items():
        if k not in BUDGET_KEYS:
            fail(f"budget.{k}", f"unknown key '{k}'; budget takes {', '.join(BUDGET_KEYS)} "
                                f"(put other fields under fixed: as train.<field>)")
        put(BUDGET_KEYS[k], v, f"budget.{k}")
    for k, v in top.fixed.items():
        put(_dotted(k, "fixed", fail), v, f"fixed.{k}")

    if not top.grid:
        fail("grid", "expected a mapping of config keys to value lists, e.g. {n: [1, 2, 4], size: [1M]}")
    grid: dict[str, list] = {}
    for k, values in top.grid.items():
        key = _dotted(k, "grid", fail)
        if key in grid:
            fail(f"grid.{k}", f"'{key}' appears twice in the grid")
        if key in fixed:
            fail(f"grid.{k}", f"'{key}' is both swept and set by {sources[key]}")
        if key == "model.loss_weights" and values and not isinstance(values[0], (list, tuple, str)):
            values = [values]  # one weight vector, not a list of them
        values = values if isinstance(values, list) else [values]
        if not values:
            fail(f"grid.{k}", "empty list of values")
        grid[key] = []
        for i, v in enumerate(values):
            if isinstance(v, dict):
                fail(f"grid.{k}", f"value {i + 1} is a mapping ({v!r}); give plain values")
            typed = _typed(name, key, v, fail, f"grid.{k}")
            if typed in grid[key]:
                fail(f"grid.{k}", f"value {v!r} appears twice")
            grid[key].append(typed)
    # typed one at a time, so the message names the key
    return grid, {key: _typed(name, key, v, fail, sources[key]) for key, v in fixed.items()}, sources


def _search_space(space: dict, name: str, grid: dict, fixed: dict, sources: dict, fail) -> list[SearchParam]:
    """``search.space`` as SearchParams: ranges (low, high, log, int) or choices, typed like the field."""
    search: list[SearchParam] = []
    for k, d in space.items():
        key = _dotted(k, "search.space", fail)
        where = f"search.space.{k}"
        if key in grid or key in fixed:
            fail(where, f"'{key}' is searched but also {'swept in the grid' if key in grid else 'set by ' + sources[key]}")
        if not isinstance(d, dict):
            fail(where, "expected {low: ..., high: ..., log: true} or {choices: [...]}")
        unknown = set(d) - {"low", "high", "log", "int", "choices"}
        if unknown:
            fail(f"{where}.{sorted(unknown)[0]}", "unknown key; a search field takes low, high, log, int or choices")
        if "choices" in d:
            if not isinstance(d["choices"], list) or not d["choices"]:
                fail(where, "choices must be a non-empty list")
            search.append(SearchParam(key, "categorical", choices=tuple(_typed(name, key, c, fail, where) for c in d["choices"])))
            continue
        if "low" not in d or "high" not in d:
            fail(where, "give low and high (or choices)")
        low, high = _number(d["low"], f"{where}.low", fail), _number(d["high"], f"{where}.high", fail)
        if not low < high:
            fail(where, f"low ({low:g}) must be below high ({high:g})")
        log = d.get("log", False)
        if not isinstance(log, bool):
            fail(f"{where}.log", f"expected true or false, got {log!r}")
        if log and low <= 0:
            fail(where, "a log range needs low > 0")
        is_int = d.get("int", False)
        if is_int and (low != int(low) or high != int(high)):
            fail(where, "an int range needs integer bounds")
        for bound in (low, high):
            _typed(name, key, int(bound) if is_int else bound, fail, where)
        search.append(SearchParam(key, "int" if is_int else "float", low, high, log))
    return search


def _check_cells(spec: SweepSpec, task_cls, fail) -> None:
    """Every grid cell must build a RunConfig (n vs layers, batch vs context, ...), and the objective must exist."""
    from lab.config import build_run_config

    first = None
    for cell in cells(spec):
        if cell.index:
            continue
        probe = {p.name: (p.choices[0] if p.kind == "categorical" else p.low) for p in spec.search}
        try:
            config = build_run_config(task_cls, {**cell.overrides(spec), **probe})
        except UserError as e:
            fail(f"grid cell {cell.key}", str(e))
        first = first or config
    _check_objective(spec, first, fail)


def _check_objective(spec: SweepSpec, config, fail) -> None:
    """The objective must be a metric the runs will have (when the task declares its metrics)."""
    import dataclasses

    from generators import registry
    from lab.train import RUN_METRICS

    names = registry.create(spec.task, dataclasses.asdict(config.task)).metric_names()
    if names is None:
        return
    bare = spec.objective.removeprefix("valid/")
    if not any(bare == n or bare.startswith(n + "/") for n in (*names, *RUN_METRICS)):
        names = sorted(names, key=lambda n: "=" in n)  # the summaries first, then per-slice names
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        fail("objective", f"'{spec.objective}' is not a metric of these runs; {spec.task} gives {shown} "
                          f"(and valid/ + each), the lab adds {', '.join(RUN_METRICS)}")


def cells(spec: SweepSpec) -> list[Cell]:
    """Expand the grid: every combination, in file order (the last key varies fastest).

    With ``search.trials = k`` each grid cell gives k units, interleaved so
    every cell gets its first trial before any gets a second.

    Example:
        >>> s = SweepSpec("x.yaml", "x", "polyarith", {"model.n": [1, 2], "train.seed": [0, 1]}, {}, "o", "maximize",
        ...               short_names={"model.n": "n", "train.seed": "seed"})
        >>> [c.key for c in cells(s)]
        ['n=1,seed=0', 'n=1,seed=1', 'n=2,seed=0', 'n=2,seed=1']
    """
    keys = list(spec.grid)
    short = spec.short_names or short_names(keys)
    base = []
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        base.append((values, format_key(values, short)))
    out = []
    for index in range(spec.trials):
        for values, key in base:
            run_key = key if spec.trials == 1 else f"{key},trial={index}"
            out.append(Cell(values=values, key=key, index=index, run_key=run_key))
    return out


def identity_hash(spec: SweepSpec) -> str:
    """A short hash of :meth:`SweepSpec.identity` (stored with the study).

    Example:
        >>> s = SweepSpec("x.yaml", "x", "polyarith", {"model.n": [1]}, {}, "o", "maximize")
        >>> len(identity_hash(s))
        16
    """
    from lab.fields import config_hash

    return config_hash(json.loads(json.dumps(spec.identity(), sort_keys=True, default=str)))


def identity_diff(old: dict, new: dict) -> list[str]:
    """Which identity fields differ between two specs, as ``key: old -> new`` strings.

    Example:
        >>> identity_diff({"fixed": {"train.lr": 0.001}}, {"fixed": {"train.lr": 0.002}})
        ['fixed.train.lr: 0.001 -> 0.002']
    """
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{d}" for d in identity_diff(a, b)]
        elif a != b:
            out.append(f"{k}: {a} -> {b}")
    return out


__all__ = ["SweepSpec", "SearchParam", "Cell", "load_spec", "cells", "format_key", "short_names",
           "identity_hash", "identity_diff", "BUDGET_KEYS"]
