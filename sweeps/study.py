"""A sweep's Optuna study: opened or created with its spec, how grid values are recorded, the sampler.

A study stores the spec it was started from (user attributes ``spec``,
``spec_hash``, ``task``, ``objective``, ``direction``, ``spec_path``):
:func:`open_study` refuses to continue a study from a different spec, and
lets the grid grow. Grid values are recorded as trial params under the
distributions of :func:`grid_distributions`, so ``optuna-dashboard`` can
plot them; searched fields are drawn by the sampler of :func:`make_sampler`.
Which trial trains which cell is :mod:`sweeps.protocol`'s business.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> url = str(Path(tempfile.mkdtemp()) / "journal.log")
    >>> spec = SweepSpec("x.yaml", "demo", "polyarith", {"model.n": [1, 2]}, {}, "accuracy/in_domain", "maximize")
    >>> study = open_study(spec, url, create=True)
    >>> study.user_attrs["spec"]["grid"], open_study(spec, url).study_name
    ({'model.n': [1, 2]}, 'demo')
"""

from __future__ import annotations

import warnings

from lab.errors import UserError
from sweeps.spec import SweepSpec, identity_diff, identity_hash
from sweeps.storage import kind_of, open_storage, quiet_optuna, redact, storage_exists, sweep_lock


def make_sampler(spec: SweepSpec, worker_index: int = 0):
    """The sampler for search params (grid params always come from the queue).

    Example:
        >>> from sweeps.spec import SweepSpec
        >>> type(make_sampler(SweepSpec("x", "x", "polyarith", {}, {}, "o", "maximize"))).__name__
        'TPESampler'
    """
    import optuna

    seed = spec.sampler_seed * 1000 + worker_index
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=seed)


def grid_distributions(spec: SweepSpec) -> dict:
    """Dotted key -> the Optuna distribution under which a grid value is recorded as a trial param.

    Numbers become Int/Float distributions over the axis' range (compatible
    when the grid grows), sizes and head kinds categorical over all their
    legal values, booleans over (False, True). Other strings and lists stay
    in the ``cell`` user attribute only (a categorical over them would break
    when the grid grows).

    Example:
        >>> from sweeps.spec import SweepSpec
        >>> s = SweepSpec("x", "x", "polyarith", {"model.n": [1, 4], "model.size": ["1M"]}, {}, "o", "maximize")
        >>> sorted(grid_distributions(s))
        ['model.n', 'model.size']
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from lab.config import HEAD_KINDS, SIZES

    out = {}
    for key, values in spec.grid.items():
        if key == "model.size":
            out[key] = CategoricalDistribution(tuple(SIZES) + ("custom",))
        elif key == "model.head_kind":
            out[key] = CategoricalDistribution(HEAD_KINDS)
        elif all(isinstance(v, bool) for v in values):
            out[key] = CategoricalDistribution((False, True))
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[key] = IntDistribution(min(values), max(values))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = FloatDistribution(float(min(values)), float(max(values)))
    return out


def suggest(trial, name: str, dist):
    """Ask ``trial`` for ``name`` under the Optuna distribution ``dist`` (a fixed param comes back as it was queued).

    Example:
        >>> import optuna
        >>> from optuna.distributions import IntDistribution
        >>> suggest(optuna.create_study().ask(), "model.n", IntDistribution(1, 1))
        1
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_int(name, dist.low, dist.high, log=dist.log)


def open_study(spec: SweepSpec, url: str, *, worker_index: int = 0, create: bool = False):
    """The study of ``spec`` in ``url`` (created with its attributes if ``create``).

    An existing study started from a different spec (budget, fixed fields,
    objective, search space) is refused with a UserError listing the changes,
    before anything is written to the storage; a grown grid is fine (new
    cells are queued). A damaged journal file is refused first
    (:func:`sweeps.storage.check_journal`).

    Example:
        >>> open_study(SweepSpec("x", "nosuch", "polyarith", {}, {}, "o", "maximize"),
        ...            "/nonexistent/journal.log")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: no study 'nosuch' in /nonexistent/journal.log; start it with: mtplab sweep run x
    """
    import optuna

    quiet_optuna()
    if not create and not storage_exists(url):
        raise UserError(f"no study '{spec.study}' in {redact(url)}; start it with: mtplab sweep run {spec.path}")
    if kind_of(url) == "postgresql":
        with sweep_lock(url, "mtplab-schema"):  # concurrent first connections race to create the tables
            storage = open_storage(url, spec, create=True)
    else:
        storage = open_storage(url, spec, create=True)
    sampler = make_sampler(spec, worker_index)
    if not create:
        try:
            return optuna.load_study(study_name=spec.study, storage=storage, sampler=sampler)
        except KeyError:
            raise UserError(f"no study '{spec.study}' in {redact(url)}; start it with: mtplab sweep run {spec.path}") from None
    with sweep_lock(url, spec.study):
        try:  # an existing study is loaded, not "created" again: create_study appends a record even then
            study = optuna.load_study(study_name=spec.study, storage=storage, sampler=sampler)
        except KeyError:
            study = optuna.create_study(study_name=spec.study, storage=storage, sampler=sampler,
                                        direction=spec.direction, load_if_exists=True)
        _check_and_store_spec(study, spec, url)
    return study


def _check_and_store_spec(study, spec: SweepSpec, url: str) -> None:
    """Refuse a study started from a different spec; store the spec attributes (grid as the union)."""
    if study.direction.name.lower() != spec.direction:
        raise UserError(f"study '{spec.study}' in {redact(url)} {study.direction.name.lower()}s; the spec says "
                        f"{spec.direction}. Use another study name (--study)")
    attrs = study.user_attrs
    mine = identity_hash(spec)
    if attrs.get("spec_hash") not in (None, mine):
        old = (attrs.get("spec") or {})
        old_identity = {"task": old.get("task"), "fixed": old.get("fixed"), "objective": old.get("objective"),
                        "direction": old.get("direction"), "search_space": (old.get("search") or {}).get("space"),
                        "grid_keys": list(old.get("grid") or {})}
        changes = "; ".join(identity_diff(old_identity, spec.identity())[:4]) or "spec changed"
        raise UserError(f"study '{spec.study}' in {redact(url)} was started from a different spec ({changes}); "
                        f"restore the spec or start a new study with --study NAME")
    # The grid may have grown: keep the stored grid as the union, in order.
    spec_dict = spec.to_dict()
    if isinstance(attrs.get("spec"), dict):
        old_grid = attrs["spec"].get("grid") or {}
        for key, values in old_grid.items():
            merged = list(values) + [v for v in spec_dict["grid"].get(key, []) if v not in values]
            spec_dict["grid"][key] = merged
    new_attrs = {"spec": spec_dict, "task": spec.task, "objective": spec.objective, "direction": spec.direction,
                 "spec_path": str(spec.path), "spec_hash": mine}
    for key, value in new_attrs.items():
        if attrs.get(key) != value:
            study.set_user_attr(key, value)


__all__ = ["open_study", "grid_distributions", "make_sampler", "suggest"]
