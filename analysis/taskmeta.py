"""What the figures say about a task: its title, its difficulty axis and which difficulties are out-of-domain.

Read from the task's own declaration at report time (``Task.title``,
``Task.difficulty`` and the ``in_domain``/``ood`` slice names of a task built
with the study's config; see :class:`generators.registry.Task`), so a
third-party task gets its own titles and regions, and a study recorded before
a task declared them gets them too. A task whose in-domain/OOD slices are
named ``PREFIX=VALUE`` (``accuracy/ops=3``, ``accuracy/length=9``) gets the
accuracy-vs-difficulty figure; when the task cannot be built where the study
is read, the slices present in the frame stand in (``accuracy/ops=m`` with
``task.train_max_ops``, as studies were always drawn).

Example:
    >>> meta = TaskMeta.of("copy", ("accuracy/length=2", "accuracy/length=3"), ("accuracy/length=4",), title="Copy")
    >>> meta.title, meta.axis, meta.figure, meta.region(4), meta.in_domain_range
    ('Copy', 'length', 'accuracy_vs_length', 'out-of-domain', (2, 3))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

SLICE = re.compile(r"^(?P<prefix>.+)=(?P<value>-?\d+)$")
_PAPER_TRAIN_OPS = 5  # polyarith's (and the paper's) default train_max_ops, for studies that did not record it


def _declared(name: str) -> tuple[str, str]:
    """The registered task's declared ``title`` and ``difficulty`` ("" for a task not installed here)."""
    from generators import registry
    from lab.errors import UserError

    try:
        cls = registry.get(name)
    except UserError:
        return "", ""
    return getattr(cls, "title", ""), getattr(cls, "difficulty", "")


@dataclass(frozen=True)
class TaskMeta:
    """A task as the figures name it; ``prefix`` is "" for a task without difficulty slices."""

    name: str
    title: str
    difficulty: str = ""  # the axis in words
    prefix: str = ""  # the slices are PREFIX=VALUE, e.g. "accuracy/ops"
    in_domain: tuple[int, ...] = ()
    ood: tuple[int, ...] = ()

    @classmethod
    def of(cls, name: str, in_domain=(), ood=(), *, title: str = "", difficulty: str = "") -> "TaskMeta":
        """From the declared slice names (``Task.in_domain``/``Task.ood``).

        Example:
            >>> TaskMeta.of("polyarith", ("accuracy/ops=1",), ("accuracy/ops=2",)).title
            'Polynomial arithmetic'
        """
        builtin_title, builtin_axis = ("", "") if title else _declared(name)
        found = {part: [SLICE.match(str(m)) for m in metrics] for part, metrics in (("in", in_domain), ("ood", ood))}
        prefixes = {m["prefix"] for ms in found.values() for m in ms if m}
        prefix = prefixes.pop() if len(prefixes) == 1 else ""
        values = {part: tuple(sorted(int(m["value"]) for m in ms if m and m["prefix"] == prefix)) if prefix else ()
                  for part, ms in found.items()}
        return cls(name=name, title=title or builtin_title or name, difficulty=difficulty or builtin_axis,
                   prefix=prefix, in_domain=values["in"], ood=values["ood"])

    @classmethod
    def of_task(cls, task) -> "TaskMeta":
        """From a task instance (built with the study's config: its slices may depend on it).

        Example:
            >>> from generators import registry
            >>> meta = TaskMeta.of_task(registry.create("polyarith", {"train_max_ops": 3}))
            >>> meta.figure, meta.in_domain_range, meta.ood[:2]
            ('accuracy_vs_ops', (1, 3), (4, 5))
        """
        return cls.of(task.name, task.in_domain, task.ood, title=getattr(task, "title", ""),
                      difficulty=getattr(task, "difficulty", ""))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, name: str = "") -> "TaskMeta":
        """What the frame alone says: ``accuracy/ops=m`` slices, out-of-domain above ``task.train_max_ops``.

        Example:
            >>> f = pd.DataFrame({"accuracy/ops=1": [0.5], "accuracy/ops=6": [0.1]})
            >>> TaskMeta.from_frame(f, "polyarith").ood
            (6,)
        """
        if not name and "task" in frame and frame["task"].notna().any():
            name = str(frame["task"].dropna().mode().iloc[0])
        values = sorted(int(m["value"]) for c in frame.columns if (m := SLICE.match(str(c))) and m["prefix"] == "accuracy/ops")
        hi = frame["task.train_max_ops"].dropna() if "task.train_max_ops" in frame else pd.Series(dtype=float)
        hi = int(hi.mode().iloc[0]) if len(hi) else _PAPER_TRAIN_OPS
        return cls.of(name or "study", [f"accuracy/ops={v}" for v in values if v <= hi],
                      [f"accuracy/ops={v}" for v in values if v > hi])

    @property
    def axis(self) -> str:
        """The x axis: the declared words, else the slice key (``length``)."""
        return self.difficulty or self.prefix.rsplit("/", 1)[-1]

    @property
    def figure(self) -> str:
        """The accuracy-vs-difficulty figure's name (``accuracy_vs_ops``, ``accuracy_vs_length``); "" without one."""
        return f"accuracy_vs_{self.prefix.rsplit('/', 1)[-1]}" if self.prefix else ""

    @property
    def in_domain_range(self) -> tuple[int, int] | None:
        return (min(self.in_domain), max(self.in_domain)) if self.in_domain else None

    def region(self, value: int) -> str:
        return "out-of-domain" if value in self.ood else "in-domain"

    def columns(self, frame: pd.DataFrame) -> dict[int, str]:
        """``{value: column}`` of the frame's difficulty slices, in order.

        Example:
            >>> TaskMeta.of("c", ("accuracy/length=2",)).columns(pd.DataFrame(columns=["accuracy/length=10", "accuracy/length=2"]))
            {2: 'accuracy/length=2', 10: 'accuracy/length=10'}
        """
        if not self.prefix:
            return {}
        found = {int(m["value"]): c for c in frame.columns if (m := SLICE.match(str(c))) and m["prefix"] == self.prefix}
        return dict(sorted(found.items()))
