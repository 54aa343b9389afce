"""The sentence machinery of the story generator: characters, templates, dialogue.

A :class:`Writer` holds one story in progress. Sentences are templates in
Python's ``str.format`` syntax plus ``[a|b|c]`` for a random choice::

    w.sentence("{A} [ran|hurried] {place:to} with {B}.")

Slots are looked up in ``w.ctx``: characters (``A``, ``B``, ``C``, ``D``,
``P`` the parent), :class:`~generators.induction.lexicon.Thing` noun phrases
and plain strings. A character formats as its name, or with a spec as a
pronoun: ``{A:he}``, ``{A:He}``, ``{A:him}``, ``{A:his}``, ``{A:His}``,
``{A:self}``; ``{A:ref}``/``{A:Ref}`` pick name or pronoun like a writer
would (the pronoun only when the same character led the previous sentence).

Example:
    >>> import random
    >>> w = Writer(random.Random(0), target_words=100)
    >>> _ = w.cast("A", "Mia", "f", "girl"), w.cast("B", "Tom", "m", "boy")
    >>> w.sentence("{A} saw {B}.")
    >>> w.say("B", "Hello, {A}!", pattern=0)
    >>> w.text()
    'Mia saw Tom. "Hello, Mia!" said Tom.'
"""

from __future__ import annotations

import random
import re

PRONOUNS = {
    "f": {"he": "she", "He": "She", "him": "her", "his": "her", "His": "Her", "self": "herself", "hers": "hers"},
    "m": {"he": "he", "He": "He", "him": "him", "his": "his", "His": "His", "self": "himself", "hers": "his"},
    "n": {"he": "it", "He": "It", "him": "it", "his": "its", "His": "Its", "self": "itself", "hers": "its"},
}
# Dialogue verbs by the line's final punctuation.
SAY_VERBS = ("said", "said", "said", "said", "replied", "whispered", "added", "explained", "called")
ASK_VERBS = ("asked", "asked", "asked", "wondered", "said")
# Exclamations: the verb follows the tone of the line.
SHOUT_VERBS = {
    "happy": ("shouted", "cried", "laughed", "exclaimed", "called", "cheered"),
    "sad": ("cried", "shouted", "sobbed", "wailed"),
    "scared": ("cried", "shouted", "yelled", "called"),
    "angry": ("shouted", "yelled", "snapped"),
    "kind": ("said", "called", "exclaimed"),
    "": ("shouted", "cried", "said", "yelled", "called", "exclaimed"),
}
PLAIN_VERBS = ("said", "asked", "replied", "called", "added", "explained", "whispered")
TONES = {
    "happy": (" with a smile", " happily", " with a big grin", " and laughed", " cheerfully"),
    "sad": (" sadly", " in a small voice", " with a sniff", " quietly"),
    "scared": (" in a shaky voice", " softly", " and held on tight"),
    "angry": (" crossly", " with a frown", " and stamped a foot"),
    "kind": (" kindly", " gently", " softly"),
    "": (),
}

_ALT = re.compile(r"\[([^\[\]]*)\]")
_TEMPLATES: dict[str, list] = {}


def _compile(template: str) -> list:
    """Split a template into literal strings and tuples of alternatives (cached)."""
    parts = _TEMPLATES.get(template)
    if parts is None:
        parts, pos = [], 0
        for m in _ALT.finditer(template):
            parts.append(template[pos:m.start()])
            parts.append(tuple(m.group(1).split("|")))
            pos = m.end()
        parts.append(template[pos:])
        _TEMPLATES[template] = parts
    return parts


def capitalize(s: str) -> str:
    """Upper-case the first letter (after an opening quote, if any).

    Example:
        >>> capitalize('"oh no," she said.')
        '"Oh no," she said.'
    """
    i = 1 if s[:1] == '"' else 0
    return s[:i] + s[i:i + 1].upper() + s[i + 1:]


class Character:
    """A person or animal of the story; formats as its name or a pronoun."""

    __slots__ = ("name", "full", "gender", "kind", "named", "role", "title", "writer")

    def __init__(self, writer: "Writer", name: str, gender: str, kind: str, named: bool = True, role: str = "",
                 title: str = ""):
        self.writer, self.name, self.gender, self.kind, self.named = writer, name, gender, kind, named
        self.role, self.title = role, title
        # grown-ups are called by title and first name ("Mrs. Ada")
        self.full = f"{title} {name}" if title else name

    def __str__(self) -> str:
        return self.full

    def __format__(self, spec: str) -> str:
        w = self.writer
        if w.subject is None:
            w.subject = self
        if not spec:
            return self.full
        if spec in ("ref", "Ref"):
            if w.prev_subject is self and w.rng.random() < 0.6:
                return PRONOUNS[self.gender]["He" if spec == "Ref" else "he"]
            return self.full
        return PRONOUNS[self.gender][spec]


class Writer:
    """One story in progress: context slots, paragraphs, word count, length budget."""

    def __init__(self, rng: random.Random, target_words: int):
        self.rng = rng
        self.target = target_words
        self.ctx: dict = {}
        self.paras: list[list[str]] = [[]]
        self.words = 0
        self.subject = self.prev_subject = None
        self.used: set[str] = set()  # templates already used in this story

    # ---- cast and context ----

    def cast(self, slot: str, name: str, gender: str, kind: str, named: bool = True, role: str = "",
             title: str = "") -> Character:
        """Put a character in slot ``slot`` ("A", "B", ...) of the context."""
        c = Character(self, name, gender, kind, named, role, title)
        self.ctx[slot] = c
        return c

    def has(self, slot: str) -> bool:
        return self.ctx.get(slot) is not None

    def pick(self, seq):
        return seq[int(self.rng.random() * len(seq))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # ---- rendering ----

    def render(self, template: str) -> str:
        """Render one template (choices + slots), without capitalising."""
        rng = self.rng
        out = []
        for part in _compile(template):
            if type(part) is str:
                out.append(part)
            else:
                out.append(part[int(rng.random() * len(part))])
        return "".join(out).format_map(self.ctx)

    def _add(self, sentence: str) -> None:
        self.paras[-1].append(sentence)
        self.words += sentence.count(" ") + 1
        self.prev_subject, self.subject = self.subject, None

    def fresh(self, templates) -> str:
        """A random template, preferring ones this story has not used yet."""
        unused = [t for t in templates if t not in self.used]
        t = self.pick(unused or templates)
        self.used.add(t)
        return t

    def sentence(self, *templates: str) -> None:
        """Add one sentence: a random choice among ``templates``, rendered and capitalised."""
        self._add(capitalize(self.render(self.fresh(templates))))

    def seq(self, *templates: str) -> None:
        """Add every template in order (one sentence each)."""
        for t in templates:
            self.sentence(t)

    def say(self, who: str, *lines: str, tone: str = "", pattern: int | None = None) -> None:
        """Add a line of dialogue spoken by character slot ``who``.

        The line is one of ``lines`` (templates); the speech verb follows its
        final punctuation (asked for '?', shouted/cried for '!'). Patterns:
        0 ``"Line," said A.``  1 ``A said, "Line."``  2 ``"Line," A said.``
        3 ``"Line," he said.`` (only if A led the previous sentence).
        """
        rng = self.rng
        speaker = self.ctx[who]
        line = capitalize(self.render(self.fresh(lines)))
        end = line[-1]
        verb = self.pick(ASK_VERBS if end == "?" else SHOUT_VERBS[tone] if end == "!" else SAY_VERBS)
        if pattern is None:
            x = rng.random()
            pattern = 0 if x < 0.42 else 1 if x < 0.68 else 3 if (x < 0.85 and self.prev_subject is speaker) else 2
        tail = self.pick(TONES[tone]) if tone and rng.random() < 0.35 else ""
        # a manner only after a plain verb: not "cheered cheerfully", "sobbed sadly"
        if verb not in PLAIN_VERBS or (pattern == 1 and tail.startswith(" and")):
            tail = ""
        body = line[:-1] + "," if end == "." else line
        if pattern == 1:
            sentence = f"{speaker:} {verb}{tail}, \"{line}\""
        elif pattern == 3:
            sentence = f"\"{body}\" {speaker:he} {verb}{tail}."
        elif pattern == 2:
            sentence = f"\"{body}\" {speaker:} {verb}{tail}."
        else:
            sentence = f"\"{body}\" {verb} {speaker:}{tail}."
        self.subject = speaker
        self._add(sentence)

    def para(self) -> None:
        """Start a new paragraph (if the current one has anything)."""
        if self.paras[-1]:
            self.paras.append([])
            self.subject = self.prev_subject = None

    def text(self) -> str:
        """The story: sentences joined by spaces, paragraphs by a blank line."""
        return "\n\n".join(" ".join(p) for p in self.paras if p)

    # ---- length budget ----

    def room(self, frac: float) -> bool:
        """True while the story is shorter than ``frac`` of its target length."""
        return self.words < self.target * frac
