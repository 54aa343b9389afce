"""Typed dataclass fields from loose values, and stable hashes: the leaf under every config.

:func:`build_dataclass` turns a dict of strings, numbers and lists (a CLI
``--set``, a sweep spec, a stored ``config.json``) into a frozen dataclass,
checking each name and converting each value to its annotated type, with a
one-line :class:`~lab.errors.UserError` for a bad one. :func:`config_hash`
is the short stable hash behind the dataset cache keys and spec identities.
It imports nothing of the lab but its errors, so the run config
(:mod:`lab.config`), the task registry and the sweep spec reader all build on
it without importing one another.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Knobs:
    ...     steps: int = 1
    ...     ops: tuple[str, ...] = ()
    >>> build_dataclass(Knobs, {"steps": "1e3", "ops": "neg,add"}, where="task")
    Knobs(steps=1000, ops=('neg', 'add'))
    >>> build_dataclass(Knobs, {"steps": "many"}, where="task")
    Traceback (most recent call last):
    ...
    lab.errors.UserError: task.steps: expected int, got 'many'
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import fields
from typing import Any

from lab.errors import UserError


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (often a CLI string) to the annotated type ``tp``; a UserError naming ``where`` if it cannot.

    Example:
        >>> coerce("yes", bool, "train.compile"), coerce("2_000", int, "train.steps"), coerce("1,2", tuple[float, ...], "w")
        (True, 2000, (1.0, 2.0))
        >>> coerce(None, dict[str, Any], "fixed")
        {}
        >>> coerce([1], dict, "grid")
        Traceback (most recent call last):
        ...
        lab.errors.UserError: grid: expected a mapping, got [1]
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is dict or origin is dict:  # a mapping read as is (an absent or empty YAML section is {})
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(value, args[0], where)
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(coerce(v, inner, where) for v in value)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, str):
                value = value.strip().replace("_", "")
                f = float(value)
                if f != int(f):
                    raise ValueError(value)
                return int(f)
            if isinstance(value, float) and value != int(value):
                raise ValueError(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int("inf")
        tname = getattr(tp, "__name__", str(tp))
        raise UserError(f"{where}: expected {tname}, got {value!r}") from None
    return value


def build_dataclass(cls: type, values: dict[str, Any], where: str, *, what: str = "config key"):
    """Instantiate dataclass ``cls`` from a dict, checking names and types.

    Unknown keys and badly typed values raise a UserError naming the key
    (``where.key``, or the bare key when ``where`` is ""; ``what`` is the noun
    the error uses for a key).

    Example:
        >>> from lab.config import TrainConfig
        >>> build_dataclass(TrainConfig, {"lr": "0.01"}, where="train").lr
        0.01
        >>> build_dataclass(TrainConfig, {"lrr": 1}, where="train")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lab.errors.UserError: unknown config key 'train.lrr'; known keys: ...
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in known:
            raise UserError(f"unknown {what} '{name}'; known keys: {', '.join(sorted(known))}")
        kwargs[key] = coerce(value, hints[key], name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None


def config_hash(obj: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-able object (used for cache keys).

    Example:
        >>> config_hash({"a": 1}) == config_hash({"a": 1}), len(config_hash([1, 2], length=8))
        (True, 8)
    """
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
