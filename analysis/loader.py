"""Read a study out of Optuna storage into one tidy table.

The one loader of the analysis room: a storage (PostgreSQL/SQLite URL or a
journal file) and a study name go in, a pandas DataFrame with one row per
completed trial comes out. Columns:

- config: ``trial``, ``run_key`` (the unit of work: the cell key, plus
  ``,trial=i`` for a cell with several search trials), ``cell_key``,
  ``cell_trial``, ``task``, ``n``, ``size`` (a ladder name, or
  ``custom d256 L6`` for a shape off the ladder), ``size_rank``
  (sort key: the ladder's nominal count, or the non-embedding count for a
  custom size), ``non_embedding``, ``params_total``, ``seed``, ``head_kind``,
  ``heads_on_top``, ``budget_tokens``, ``tokens_seen``, ``wall_seconds``,
  ``device``, ``run_dir``, ``best_step``, ``value`` (the objective), every
  scalar field of the run config under its dotted name (``model.d_model``,
  ``train.lr``, ``task.train_max_ops``, ...) and every swept field of the cell
  under the name the cell gives it;
- metrics: the final metrics under their own flat names
  (``accuracy/ops=3``, ``induction_success``, ...) and the best checkpoint's
  under ``best:<name>`` (the checkpoint the run selected: on the validation
  objective ``valid/<objective>`` when the task has a validation split, else
  on the test objective), the test-selected (paper-faithful) checkpoint's
  under ``best_by_test:<name>``. Validation metrics are named ``valid/<name>``
  in each set;
- milestones: ``milestone:<name>`` (e.g. ``milestone:tokens_to_induction``);
  a milestone never reached is ``inf``, one not recorded is missing.

Trials in any other state (RUNNING, WAITING, FAIL, PRUNED) are cells still
missing; :func:`missing_cells` lists them together with grid cells that have
no trial at all. ``analysis`` never trains: it opens storage through
:func:`sweeps.storage.open_storage` (``create=False``: a reader creates
nothing) and relies only on the trial user attributes the sweep runner writes.

Example:
    >>> import tempfile, optuna
    >>> from optuna.trial import create_trial
    >>> path = Path(tempfile.mkdtemp()) / "journal.log"
    >>> study = optuna.create_study(storage=open_storage(str(path), create=True), study_name="demo")
    >>> study.add_trial(create_trial(value=0.5, user_attrs={
    ...     "cell": {"model.n": 2}, "task": "polyarith", "metrics": {"accuracy/in_domain": 0.5},
    ...     "config": {"model": {"n": 2, "size": "1M"}, "train": {"seed": 0, "tokens": 1000}}}))
    >>> df = load_trials(open_storage(str(path)), "demo")
    >>> df[["n", "size", "accuracy/in_domain"]].values.tolist()
    [[2, '1M', 0.5]]
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from analysis.taskmeta import TaskMeta
from lab.config import LADDER, ModelConfig, RunConfig, TrainConfig
from lab.errors import UserError
from lab.shorthands import expand
from sweeps.storage import open_storage


def stored_config(config: dict, task: str | None = None, cell: dict | None = None) -> RunConfig | None:
    """A trial's stored run config read by lab's own reader (:meth:`lab.config.RunConfig.from_dict`).

    Defaults, the size ladder and the derived numbers (budget, shape) are
    then lab's, never re-implemented here. Tolerant of old and odd trials:
    a field the stored config lacks takes the trial's ``cell`` value (dotted
    or short name), else lab's default; fields this version of the lab no
    longer has are dropped; a task not registered here keeps only its name
    (its fields stay in the ``task.*`` columns); a config that still cannot
    be read is None.

    Example:
        >>> cfg = stored_config({"model": {"size": "1M", "gone": 1}, "train": {"steps": 10}}, "polyarith", {"n": 2})
        >>> cfg.model.n, cfg.train.budget_tokens, cfg.train.context
        (2, 81920, 256)
        >>> stored_config({"model": {"n": "two"}}, "polyarith") is None, stored_config({}) is None
        (True, True)
    """
    from generators import registry

    if not isinstance(config, dict):
        return None
    sections = {key: dict(config[key]) if isinstance(config.get(key), dict) else {} for key in ("task", "model", "train")}
    name = sections["task"].pop("name", None) or task
    if not name:
        return None
    try:
        task_cls = registry.get(name)
    except UserError:  # a plugin not installed where the study is read
        task_cls, sections["task"] = _UnknownTask, {}
    for key, value in (cell or {}).items():
        section, _, field_name = expand(key).partition(".")
        if section in sections:
            sections[section].setdefault(field_name, value)
    sections["train"].setdefault("context", task_cls.default_context)  # as build_run_config fills in a 0
    for section, cls in (("task", task_cls.Config), ("model", ModelConfig), ("train", TrainConfig)):
        known = {f.name for f in fields(cls)}
        sections[section] = {k: v for k, v in sections[section].items() if k in known}
    try:
        return RunConfig.from_dict({**sections, "task": {"name": name, **sections["task"]}}, lambda _: task_cls)
    except (UserError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _UnknownConfig:
    """The task section of a trial whose task is not registered where the study is read."""


class _UnknownTask:
    Config = _UnknownConfig
    default_context = 256


BEST = "best:"  # prefix of the metric columns of the checkpoint each run selected (on validation when it can)
BY_TEST = "best_by_test:"  # prefix of the metric columns of the checkpoint best on the test objective (the paper's)
MILESTONE = "milestone:"  # prefix of the run's milestones (tokens_to_induction, ...); inf = never reached
PREFIXES = {"final": "", "best": BEST, "best-by-test": BY_TEST}
CONFIG_COLUMNS = ["trial", "run_key", "cell_key", "cell_trial", "task", "n", "size", "size_rank", "non_embedding", "params_total", "seed",
                  "head_kind", "heads_on_top", "budget_tokens", "tokens_seen", "wall_seconds", "device", "run_dir",
                  "best_step", "best_by_test_step", "value"]


def _load_study(storage, study_name: str):
    import optuna

    try:
        names = [s.study_name for s in storage.get_all_studies()]
    except Exception as e:
        raise UserError(f"cannot read studies from the storage ({e.__class__.__name__}: {e})") from None
    if study_name not in names:
        known = ", ".join(sorted(names)[:10]) or "none"
        raise UserError(f"no study '{study_name}' in this storage (studies there: {known})")
    return optuna.load_study(study_name=study_name, storage=storage)


def _number(x):
    """int/float from a value that may be a string like '1e6'; None if not a number."""
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)):
        return x
    try:
        v = float(x)
        return int(v) if v.is_integer() else v
    except (TypeError, ValueError):
        return None


def size_rank(size: str, non_embedding: float | None) -> float:
    """Sort key for sizes: the ladder's nominal count, else the non-embedding parameters.

    Example:
        >>> size_rank("30M", 31.5e6) < size_rank("100M", 85e6) < size_rank("custom", 2e8)
        True
    """
    if size in LADDER:
        return LADDER[size]
    return float(non_embedding) if non_embedding is not None and not pd.isna(non_embedding) else math.inf


def _cell_of(trial) -> dict:
    cell = trial.user_attrs.get("cell")
    if isinstance(cell, dict):
        return cell
    if trial.params:
        return dict(trial.params)
    return dict(trial.system_attrs.get("fixed_params") or {})


def _run_key(trial, cell: dict) -> str:
    return str(trial.user_attrs.get("run_key") or _cell_key(trial, cell))


def _cell_key(trial, cell: dict) -> str:
    key = trial.user_attrs.get("cell_key")
    if key:
        return str(key)
    if cell:
        return ",".join(f"{k}={cell[k]}" for k in sorted(cell))
    return f"trial#{trial.number}"


def _shape(cfg: RunConfig | None, cell: dict) -> dict:
    """n, size (a ladder name, or ``custom dD LL``), seed, head kind, non-embedding estimate and budget of a trial.

    From its stored config as lab reads it; a trial whose config cannot be read keeps what its cell says, NaN else.
    """
    if cfg is None:
        return {"n": _number(cell.get("model.n", cell.get("n"))), "size": cell.get("model.size", cell.get("size")),
                "seed": _number(cell.get("train.seed", cell.get("seed"))), "head_kind": cell.get("model.head_kind"),
                "heads_on_top": cell.get("model.heads_on_top"), "non_embedding": None, "budget_tokens": None}
    model, size = cfg.model, cfg.model.size
    try:
        model = model.resolved()
    except UserError:
        pass
    if size not in LADDER and model.d_model and model.layers:
        size = f"{size} d{model.d_model} L{model.layers}"  # custom shapes stay apart
    return {"n": model.n, "size": size, "seed": cfg.train.seed, "head_kind": model.head_kind,
            "heads_on_top": model.heads_on_top,
            "non_embedding": model.paper_non_embedding if model.d_model and model.layers else None,
            "budget_tokens": cfg.train.budget_tokens}


def _row(trial) -> dict:
    ua = trial.user_attrs
    config = ua.get("config") if isinstance(ua.get("config"), dict) else {}
    cell = _cell_of(trial)
    params = ua.get("params") if isinstance(ua.get("params"), dict) else {}
    task = ua.get("task") or (config.get("task") or {}).get("name")
    shape = _shape(stored_config(config, task, cell), cell)
    non_emb = _number(params.get("non_embedding"))
    if non_emb is None:
        non_emb = shape["non_embedding"]
    size, n, seed = shape["size"], shape["n"], shape["seed"]
    row = {
        "trial": trial.number, "run_key": _run_key(trial, cell), "cell_key": _cell_key(trial, cell),
        "cell_trial": int(_number(ua.get("cell_trial")) or 0), "task": task,
        "n": int(_number(n)) if _number(n) is not None else None,
        "size": str(size) if size is not None else None, "size_rank": size_rank(size, non_emb),
        "non_embedding": non_emb, "params_total": _number(params.get("total")),
        "seed": int(_number(seed)) if _number(seed) is not None else None,
        "head_kind": shape["head_kind"], "heads_on_top": shape["heads_on_top"],
        "budget_tokens": shape["budget_tokens"], "tokens_seen": _number(ua.get("tokens_seen")),
        "wall_seconds": _number(ua.get("wall_seconds")), "device": ua.get("device"), "run_dir": ua.get("run_dir"),
        "best_step": _number(ua.get("best_step")), "best_by_test_step": _number(ua.get("best_by_test_step")),
        "value": trial.value,
    }
    for section in ("task", "model", "train"):
        for key, value in (config.get(section) or {}).items():
            if key != "name":
                row[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    for key, value in cell.items():
        row.setdefault(key, value if isinstance(value, (int, float, str, bool)) or value is None else str(value))
    for key, value in (ua.get("metrics") or {}).items():
        if _number(value) is not None:
            row[key] = float(value)
    for prefix, attr in ((BEST, "best_metrics"), (BY_TEST, "best_by_test_metrics")):
        for key, value in (ua.get(attr) or {}).items():
            if _number(value) is not None:
                row[prefix + key] = float(value)
    milestones = ua.get("milestones")
    for key, value in (milestones.items() if isinstance(milestones, dict) else ()):
        if value is None:
            row[MILESTONE + key] = math.inf  # recorded as never reached
        elif _number(value) is not None:
            row[MILESTONE + key] = float(value)
    return row


@dataclass
class StudyData:
    """One study as the analysis sees it.

    ``frame``: one row per completed cell (see the module docstring);
    ``missing``: one row per cell with no completed trial (``state`` says why);
    ``attrs``: the study's user attributes (``spec``, ``task``, ``objective``, ...);
    ``notes``: things the reader should know (duplicates dropped, ...).
    """

    name: str
    frame: pd.DataFrame
    missing: pd.DataFrame
    attrs: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    n_trials: int = 0
    completed: int = 0  # runs finished (a cell with several search trials counts each)
    metrics: list = field(default_factory=list)  # final metric names, in first-seen order
    swept: list = field(default_factory=list)  # the cells' dotted keys
    meta: TaskMeta | None = None  # the task's title, difficulty axis and regions (None: its code is not here)

    @property
    def task(self) -> str:
        """The study's task name (from the study attributes, else the trials)."""
        if self.attrs.get("task"):
            return str(self.attrs["task"])
        tasks = sorted(set(self.frame["task"].dropna())) if "task" in self.frame else []
        return tasks[0] if tasks else "unknown"

    @property
    def spec(self) -> dict:
        spec = self.attrs.get("spec")
        return spec if isinstance(spec, dict) else {}


def _grid_cells(spec: dict) -> list[dict]:
    """The cells a spec's ``grid`` asks for, if the grid is a mapping of value lists."""
    grid = spec.get("grid") if isinstance(spec, dict) else None
    if not isinstance(grid, dict) or not grid:
        return []
    keys = list(grid)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in grid.values()]
    if math.prod(len(v) for v in values) > 100_000:
        return []
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def _same_cell(a: dict, b: dict) -> bool:
    return all(k in b and str(b[k]) == str(v) for k, v in a.items())


def load_study(storage, study_name: str) -> StudyData:
    """Everything the figures and the report need from one study.

    ``storage`` is an Optuna storage or a URL/path for :func:`open_storage`.
    A study that does not exist, or has no completed trial yet, is a UserError.

    Example:
        >>> import tempfile, optuna
        >>> from optuna.trial import create_trial, TrialState
        >>> path = str(Path(tempfile.mkdtemp()) / "journal.log")
        >>> study = optuna.create_study(storage=open_storage(path, create=True), study_name="s")
        >>> study.add_trial(create_trial(value=1.0, user_attrs={"cell": {"model.n": 1}, "task": "induction"}))
        >>> study.add_trial(create_trial(state=TrialState.RUNNING, user_attrs={"cell": {"model.n": 2}}))
        >>> data = load_study(path, "s")
        >>> len(data.frame), data.missing[["run_key", "state"]].values.tolist()
        (1, [['model.n=2', 'RUNNING']])
    """
    from optuna.trial import TrialState

    if isinstance(storage, (str, Path)):
        storage = open_storage(str(storage))
    study = _load_study(storage, study_name)
    try:
        trials = study.get_trials(deepcopy=False)
        attrs = dict(study.user_attrs)
    except Exception as e:
        raise UserError(f"cannot read study '{study_name}' ({e.__class__.__name__}: {e})") from None
    notes = []
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    rows = [_row(t) for t in done]
    frame = pd.DataFrame(rows)
    if frame.empty:
        pending = len(trials)
        raise UserError(f"study '{study_name}' has no finished trial yet ({pending} trial(s) pending or failed)")
    dup = frame.duplicated("run_key", keep="last")
    if dup.any():
        notes.append(f"{int(dup.sum())} run(s) completed more than once; the latest trial of each is used")
        frame = frame[~dup]
    frame = frame.sort_values(["size_rank", "n", "seed", "trial"], na_position="last").reset_index(drop=True)

    # Missing: trials that did not complete (latest state per cell), then grid cells with no trial at all.
    finished = set(frame["run_key"])
    missing, seen = {}, set()
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE:
            continue
        cell = _cell_of(t)
        key = _run_key(t, cell)
        if key in finished:
            continue
        missing[key] = {"run_key": key, "cell_key": _cell_key(t, cell), "state": t.state.name, "trial": t.number,
                        **cell}
        seen.add(key)
    spec = attrs.get("spec") if isinstance(attrs.get("spec"), dict) else {}
    done_cells = [_cell_of(t) for t in done]
    other_cells = [_cell_of(t) for t in trials if t.state != TrialState.COMPLETE]
    grid = _grid_cells(spec)
    known = {k for c in done_cells + other_cells for k in c}
    if grid and not set(grid[0]) <= known:
        notes.append(f"the spec's grid keys ({', '.join(grid[0])}) are not the trials' cell keys "
                     f"({', '.join(sorted(known)) or 'none'}); cells never started cannot be listed")
        grid = []
    for cell in grid:
        if any(_same_cell(cell, c) for c in done_cells) or any(_same_cell(cell, c) for c in other_cells):
            continue
        key = ",".join(f"{k}={cell[k]}" for k in sorted(cell))
        missing[key] = {"run_key": key, "cell_key": key, "state": "NOT_STARTED", "trial": None, **cell}
    missing_df = pd.DataFrame(list(missing.values()),
                              columns=None if missing else ["run_key", "cell_key", "state", "trial"])
    metrics = list(dict.fromkeys(k for t in done for k, v in (t.user_attrs.get("metrics") or {}).items()
                                 if _number(v) is not None))
    swept = list(dict.fromkeys(k for t in trials for k in _cell_of(t)))
    data = StudyData(name=study_name, frame=frame, missing=missing_df, attrs=attrs, notes=notes,
                     n_trials=len(trials), completed=len(frame), metrics=metrics, swept=swept)
    data.meta = task_meta(data.task, [t.user_attrs for t in done])
    return data


def task_meta(task: str, trials: list[dict]) -> TaskMeta | None:
    """The task's labels for the figures, from its own declaration with the config of the first trial of it.

    ``trials`` are user attributes of finished trials. Read at report time from
    the registry (not stored with the study): studies from before a task
    declared its labels get them too, and the regions follow each study's config.
    None when the task cannot be built here (a plugin not installed).

    Example:
        >>> task_meta("polyarith", [{"task": "polyarith", "config": {"task": {"train_max_ops": 4}}}]).ood[:2]
        (5, 6)
        >>> task_meta("not-installed", [{"task": "not-installed"}]) is None
        True
    """
    from generators import registry

    for ua in trials:
        cfg = stored_config(ua.get("config") or {}, ua.get("task"), ua.get("cell") if isinstance(ua.get("cell"), dict) else {})
        if cfg is not None and cfg.task_name == task:
            try:
                return TaskMeta.of_task(registry.get(task)(cfg.task))
            except UserError:
                return None
    return None


def best_per_cell(frame: pd.DataFrame, direction: str = "maximize") -> tuple[pd.DataFrame, str]:
    """One row per grid cell: with several search trials in a cell, the one with the best objective.

    Returns the frame and a note for the reader ("" when every cell had one trial).

    Example:
        >>> f = pd.DataFrame({"cell_key": ["n=1", "n=1", "n=2"], "value": [0.2, 0.5, 0.4], "trial": [0, 1, 2]})
        >>> best, note = best_per_cell(f)
        >>> best["trial"].tolist(), note
        ([1, 2], '1 cell(s) had several search trials; each shows its best by the objective (maximize)')
    """
    if "cell_key" not in frame or not frame["cell_key"].duplicated().any():
        return frame, ""
    several = int((frame.groupby("cell_key", sort=False).size() > 1).sum())
    ranked = frame.assign(_v=frame["value"] if direction != "minimize" else -frame["value"])
    keep = ranked.sort_values("_v", ascending=False, na_position="last").drop_duplicates("cell_key").index
    out = frame.loc[sorted(keep)].reset_index(drop=True)
    return out, f"{several} cell(s) had several search trials; each shows its best by the objective ({direction})"


def load_trials(storage, study_name: str) -> pd.DataFrame:
    """One row per completed trial: config columns and metric columns.

    Example:
        >>> load_trials("/nonexistent.log", "x")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: storage /nonexistent.log does not exist
    """
    return load_study(storage, study_name).frame


def missing_cells(storage, study_name: str) -> pd.DataFrame:
    """The cells with no completed trial: RUNNING/WAITING/FAIL trials and grid cells never started.

    Example:
        >>> missing_cells("/nonexistent.log", "x")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: storage /nonexistent.log does not exist
    """
    return load_study(storage, study_name).missing


def _prefix_of(col: str) -> str:
    for prefix in (BEST, BY_TEST, MILESTONE):
        if col.startswith(prefix):
            return prefix
    return ""


def metric_columns(frame: pd.DataFrame, which: str = "final", swept: tuple = ()) -> list[str]:
    """The metric columns of a loaded frame: final ones, ``best:`` ones or ``best_by_test:`` ones.

    ``which`` is ``final``, ``best`` or ``best-by-test``. A metric column is
    numeric, not a config column, not a dotted config key (``model.n``), not
    a milestone and not in ``swept``. :attr:`StudyData.metrics` holds the
    exact list of final metrics for a loaded study.

    Example:
        >>> f = pd.DataFrame({"n": [1], "accuracy/ood": [0.1], "best:accuracy/ood": [0.2], "model.n": [1],
        ...                   "best_by_test:accuracy/ood": [0.3], "milestone:tokens_to_induction": [1e6]})
        >>> metric_columns(f), metric_columns(f, "best-by-test")
        (['accuracy/ood'], ['best_by_test:accuracy/ood'])
    """
    want = PREFIXES[which]
    out = []
    for col in frame.columns:
        if col in CONFIG_COLUMNS or col in swept or _prefix_of(col) != want:
            continue
        base = col[len(want):]
        if re.match(r"^[A-Za-z_]\w*\.", base) or not pd.api.types.is_numeric_dtype(frame[col]):
            continue
        out.append(col)
    return out


def with_metrics(frame: pd.DataFrame, which: str) -> pd.DataFrame:
    """The frame with its metric columns taken from one checkpoint: ``final``, ``best`` or ``best-by-test``.

    ``best`` is the checkpoint each run selected (on validation when it had a
    validation split), ``best-by-test`` the one best on the test objective.
    A trial without metrics of that checkpoint keeps its final ones.

    Example:
        >>> f = pd.DataFrame({"n": [1], "induction_success": [0.2], "best:induction_success": [0.3],
        ...                   "best_by_test:induction_success": [0.4]})
        >>> with_metrics(f, "best")["induction_success"].tolist(), with_metrics(f, "best-by-test")["induction_success"].tolist()
        ([0.3], [0.4])
    """
    out = frame.copy()
    prefix = PREFIXES[which]
    if prefix:
        for col in metric_columns(frame, which):
            name = col[len(prefix):]
            out[name] = out[col].where(out[col].notna(), out[name]) if name in out else out[col]
    return out
