"""The task registry: one name -> one :class:`Task` subclass.

Everything in the lab (``mtplab train``, ``mtplab generate``, sweep specs)
finds tasks here and nowhere else, so a task registered here is usable
everywhere. There are three ways in:

1. built-in tasks of this package (``polyarith``, ``induction``), imported
   lazily on first lookup;
2. installed plugins: a distribution that declares an entry point in the group
   ``mtplab.tasks`` whose object is a Task subclass (or a module that registers
   its tasks when imported)::

       [project.entry-points."mtplab.tasks"]
       copy = "my_tasks.copy:CopyTask"

3. modules named in the environment variable ``MTPLAB_TASKS``
   (comma-separated import paths or ``.py`` file paths), handy for a task that
   lives in one file next to your experiments.

A task is a frozen config dataclass plus a class with four methods; see
:class:`Task` and the README section "Adding a task".

Example:
    >>> from generators import registry
    >>> "polyarith" in registry.names()
    True
    >>> task = registry.create("polyarith", {"test_per_op": 4})
    >>> task.config.test_per_op
    4
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from lab.errors import UserError

ENTRY_POINT_GROUP = "mtplab.tasks"
_BUILTIN = {
    "polyarith": "generators.polyarith",
    "induction": "generators.induction",
}
_REGISTRY: dict[str, type["Task"]] = {}
_ORIGIN: dict[str, str] = {}  # name -> where its class came from (a built-in module, an entry point, MTPLAB_TASKS)
_loading: list[str] = []  # the source being imported right now (register() records it)
_discovered = False


class Task:
    """Base class of a synthetic task.

    Subclasses set the class attributes and implement the methods below. The
    lab calls them in this order for a training run::

        task = TaskCls(config)
        train = task.build("train", seed)      # list of JSON-able records
        enc = task.make_tokenizer(train)       # a tiktoken.Encoding
        test = task.build("test", seed)
        valid = task.build("valid", seed)      # only if "valid" in task.splits
        text = task.document(record)           # what the model is trained on
        metrics = task.evaluate(model, test, enc, device)

    Class attributes:
        name: registry name, e.g. ``"polyarith"``.
        Config: a frozen dataclass with a default for every field.
        objective: the metric a sweep optimises by default.
        direction: ``"maximize"`` or ``"minimize"``.
        in_domain / ood: the slice metric names that are in-domain and
            out-of-domain, e.g. ``accuracy/length=2`` .. ``=8`` and ``=9`` ..
            ``=12`` (set them per config in ``__init__`` when the config
            moves the boundary). The analysis figures read them: slices named
            ``PREFIX=VALUE`` give the accuracy-vs-difficulty figure its x axis
            (the values) and its shaded out-of-domain region.
        title: the task's name in figure titles (default: ``name``).
        difficulty: the difficulty axis in words, e.g. ``"string length"``
            (default: the slice key, ``length``).
        description: one line for ``mtplab tasks``.
        decode_mode: ``mtplab bench decode``'s default workload: ``"answers"``
            (each test prompt's answer, for short-answer tasks) or
            ``"continue"`` (long continuations of held-out documents).
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    objective: ClassVar[str]
    direction: ClassVar[str] = "maximize"
    in_domain: ClassVar[tuple[str, ...]] = ()
    ood: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    title: ClassVar[str] = ""
    difficulty: ClassVar[str] = ""
    decode_mode: ClassVar[str] = "answers"
    # A task that also builds "valid" (disjoint from train and test) gets checkpoints and learning
    # rates chosen on it: the trainer scores it beside test, as ``valid/<metric>``.
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    default_context: ClassVar[int] = 256  # train.context when the user leaves it at 0

    def __init__(self, config: Any):
        self.config = config

    def build(self, split: str, seed: int) -> list[dict]:
        """Return the examples of ``split`` as JSON-serialisable dicts.

        Must be deterministic in (config, seed, index) and the test split must
        never contain a training example.
        """
        raise NotImplementedError

    def document(self, example: dict) -> str:
        """The text of one training example, as the model sees it."""
        raise NotImplementedError

    def context(self, example: dict) -> str:
        """The leading part of ``document(example)`` that is context only: no loss on its tokens.

        Default ``""``: every token is a target. polyarith returns the prompt
        when its ``loss_on`` is ``"answer"``, so the loss covers the answer only.
        """
        return ""

    def make_tokenizer(self, train: list[dict]):
        """The tokenizer (a ``tiktoken.Encoding``). Default: raw bytes."""
        from lab.tokenizers import byte_encoding

        return byte_encoding()

    def evaluate(self, model, test: list[dict], enc, device, *, limit: int | None = None) -> dict[str, float]:
        """Score ``model`` on ``test``; flat metric names, e.g. ``accuracy/ops=3``.

        ``limit`` caps the examples scored (used for quick evals during
        training); ``None`` scores all of them.
        """
        raise NotImplementedError

    def metric_names(self) -> tuple[str, ...] | None:
        """Optional: the metric names ``evaluate`` returns with this config (a name ``N`` also covers ``N/...``).

        A sweep spec whose objective is none of them (nor a lab metric such
        as ``loss/heldout``, nor ``valid/`` + one of them) is refused before
        anything trains. Default None: not declared, not checked.
        """
        return None

    def stats(self, examples: list[dict], enc) -> dict[str, float]:
        """Optional dataset statistics for ``mtplab generate --stats``."""
        return {"examples": float(len(examples))}

    def milestones(self, history: list[dict]) -> dict:
        """Optional: when the run learned something, from its eval history (see :mod:`lab.milestones`).

        Stored in ``eval.json`` as ``milestones``; default: none.
        """
        return {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator that adds a Task subclass to the registry.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class EchoConfig:
        ...     length: int = 8
        >>> @register
        ... class Echo(Task):
        ...     name, Config, objective = "echo-doc", EchoConfig, "accuracy"
        >>> get("echo-doc") is Echo
        True
    """
    for attr in ("name", "Config", "objective"):
        if not hasattr(cls, attr):
            raise TypeError(f"task class {cls.__name__} must define '{attr}'")
    if not dataclasses.is_dataclass(cls.Config):
        raise TypeError(f"{cls.__name__}.Config must be a dataclass")
    name, where = cls.name, f"{cls.__module__}.{cls.__qualname__}"
    origin = _loading[-1] if _loading else f"module {cls.__module__}"
    builtin = _BUILTIN.get(name)
    if builtin and cls.__module__ != builtin and not cls.__module__.startswith(builtin + "."):
        raise UserError(f"task name '{name}' of {origin} ({where}) is the name of a built-in task ({builtin}); "
                        f"rename the plugin's task")
    old = _REGISTRY.get(name)
    if old is not None and f"{old.__module__}.{old.__qualname__}" != where:
        raise UserError(f"task '{name}' is defined twice: by {_ORIGIN[name]} ({old.__module__}.{old.__qualname__}) "
                        f"and by {origin} ({where}); rename one task or remove one of the two")
    _REGISTRY[name] = cls
    _ORIGIN.setdefault(name, origin)
    return cls


@contextlib.contextmanager
def _source(label: str):
    _loading.append(label)
    try:
        yield
    finally:
        _loading.pop()


def _import_path(spec: str) -> None:
    """Import a module by dotted name or by ``.py`` file path."""
    if spec.endswith(".py"):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"MTPLAB_TASKS names {spec}, which is not a file")
        modname = f"mtplab_user_tasks_{path.stem}"
        if modname in sys.modules:
            return
        mod_spec = importlib.util.spec_from_file_location(modname, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[modname] = module
        mod_spec.loader.exec_module(module)
    else:
        try:
            importlib.import_module(spec)
        except ImportError as e:
            raise UserError(f"cannot import task module '{spec}' (from MTPLAB_TASKS): {e}") from None


def _discover() -> None:
    """Load entry-point plugins and MTPLAB_TASKS modules once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None)
        with _source(f"entry point '{ep.name} = {ep.value}'" + (f" of {dist}" if dist else "")):
            obj = ep.load()
            if isinstance(obj, type) and issubclass(obj, Task):
                register(obj)  # a module that registers itself on import did so above
    for spec in filter(None, (s.strip() for s in os.environ.get("MTPLAB_TASKS", "").split(","))):
        with _source(f"MTPLAB_TASKS entry '{spec}'"):
            _import_path(spec)


def _load_builtin(name: str) -> None:
    """Import a built-in task's module (it registers itself); absent modules are skipped."""
    try:
        with _source(f"built-in module {_BUILTIN[name]}"):
            importlib.import_module(_BUILTIN[name])
    except ModuleNotFoundError as e:
        if e.name != _BUILTIN[name]:
            raise


def names() -> list[str]:
    """All registered task names: built-in, entry-point plugins and MTPLAB_TASKS modules.

    Example:
        >>> "polyarith" in names()
        True
    """
    for name in _BUILTIN:
        if name not in _REGISTRY:
            _load_builtin(name)
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> type[Task]:
    """The Task class registered as ``name``; a UserError if there is none.

    Example:
        >>> get("polyarith").objective
        'accuracy/in_domain'
    """
    if name not in _REGISTRY and name in _BUILTIN:
        _load_builtin(name)
    _discover()  # always: a plugin that clashes with this name is refused, not silently shadowed
    if name not in _REGISTRY:
        raise UserError(f"unknown task '{name}'; registered tasks: {', '.join(names())}")
    return _REGISTRY[name]


def create(name: str, overrides: dict[str, Any] | None = None) -> Task:
    """Build a task instance from its name and config field overrides.

    Example:
        >>> create("polyarith", {"train_examples": 100}).config.train_examples
        100
    """
    from lab.fields import build_dataclass

    cls = get(name)
    config = build_dataclass(cls.Config, dict(overrides or {}), where=f"task.{name}")
    return cls(config)
