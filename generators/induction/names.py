"""Character names: a real first-name list for training, made-up names for testing.

Training names come from the first-name lists that ship with the ``faker``
package (MIT licence; the English-language providers ``en``, ``en_US``,
``en_GB``, ``en_IE`` and ``en_NZ``: about 7,000 names with their usual
gender). Names that are also ordinary English words ("Will", "May", "Sunny",
"Robin", ...) are dropped, so that finding names in a user's stories by
matching this list does not mistake a word for a name.

Test names are *generated*: two or three random syllables ("Drovin",
"Talemu"; with a small vocabulary also two glued vocabulary tokens), kept only if the tokenizer splits them into exactly two tokens, in
both the mid-sentence form (" Drovin") and the form without a leading space
(``"Drovin``, at a paragraph start), with the same second token in both, and
if they are neither on the name list nor a word of the training corpus.

Example:
    >>> names = name_list()
    >>> "Lily" in names and "Will" not in names
    True
    >>> names["Lily"]
    ('f',)
"""

from __future__ import annotations

import functools
import importlib
import itertools
import random

from .lexicon import all_words

# faker providers whose first names we use (all English-speaking locales it ships).
_LOCALES = ("en", "en_US", "en_GB", "en_IE", "en_NZ")

# Names that are also common English words (many are capitalised at the start
# of a sentence, so matching them would find false names). Lexicon words are
# dropped as well, except the few classic story names in _KEEP.
_STOP = frozenset("""
will may can june april august hope joy grace faith summer autumn winter spring sky star dawn ray mark bill
pat art rich guy don sue chase hunter page major king prince princess duke baby honey sugar candy brook river
rain storm sage ash love unique precious miracle angel heaven destiny harmony melody royal golden marvel
early noble sterling clay cliff dale glen rusty dusty misty stormy sunny happy lucky merry bliss joyous
gay constance patience prudence charity mercy verity justice honor trinity christian heather holly ivy
jewel crystal pearl ruby amber ginger olive cherry berry apple peaches lemon cookie sandy rocky brandy
buck sonny junior bud penny nickel cash dollar fancy rebel
tiny teddy young long little brown green gray grey black white golden silver summer
""".split())
_KEEP = frozenset({"Lily", "Rose", "Daisy", "Robin"})


@functools.lru_cache(maxsize=1)
def name_list() -> dict[str, tuple[str, ...]]:
    """All usable first names -> their genders (``'f'``, ``'m'`` or both), sorted by name.

    Example:
        >>> len(name_list()) > 5000
        True
    """
    words = all_words()
    found: dict[str, set[str]] = {}
    for loc in _LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        for attr, gender in (("first_names_female", "f"), ("first_names_male", "m")):
            for name in getattr(provider, attr, ()):
                if not (3 <= len(name) <= 10 and name.isascii() and name.isalpha()
                        and name[0].isupper() and name[1:].islower()):
                    continue
                low = name.lower()
                if name not in _KEEP and (low in _STOP or low in words):
                    continue
                found.setdefault(name, set()).add(gender)
    return {n: tuple(sorted(found[n])) for n in sorted(found)}


@functools.lru_cache(maxsize=1)
def common_names() -> tuple[str, ...]:
    """Short, frequent names (US/UK/NZ lists, at most six letters), like those of TinyStories.

    Example:
        >>> {"Tom", "Mia", "Ben"} <= set(common_names())
        True
    """
    allowed = name_list()
    common: set[str] = set()
    for loc in ("en_US", "en_GB", "en_NZ"):
        provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        for attr in ("first_names_female", "first_names_male"):
            common.update(n for n in getattr(provider, attr, ()) if n in allowed and len(n) <= 6)
    common.update(n for n in ("Tom", "Tim", "Ben", "Sue", "Mia", "Max", "Sam", "Anna", "Lucy", "Lily", "Jack",
                              "Emma", "Leo", "Zoe", "Amy", "Kim", "Joe", "Jane", "Ella", "Finn")
                  if n in allowed)
    return tuple(sorted(common))


def pick_name(rng: random.Random, gender: str, taken: set[str]) -> str:
    """A training name of ``gender`` ('f' or 'm'), not in ``taken``.

    Half the time a short common name, otherwise any name of the full list, so
    that the corpus has both frequent names (single tokens) and many rare ones
    (several tokens, which is what teaches a model to copy names).

    Example:
        >>> pick_name(random.Random(0), "f", set()) in name_list()
        True
    """
    pool = _by_gender(gender, rng.random() < 0.5)
    while True:
        name = pool[int(rng.random() * len(pool))]
        if name not in taken:
            return name


@functools.lru_cache(maxsize=4)
def _by_gender(gender: str, common: bool) -> tuple[str, ...]:
    names = name_list()
    source = common_names() if common else tuple(names)
    return tuple(n for n in source if gender in names[n])


# ---- made-up test names -------------------------------------------------------

_ONSETS = ("b", "br", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kr", "l", "m", "n", "p", "pr", "r",
           "s", "st", "t", "tr", "v", "z", "th", "sh", "ch", "c", "w", "y", "bl", "sl", "sn", "qu")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ee", "oo", "ou", "ia", "y")
_CODAS = ("", "", "", "n", "r", "l", "m", "s", "th", "x", "k", "nd", "st", "rk", "ll", "t", "v")


# Glued-token names only top the pool up to this size (syllable names read better).
GLUED_UP_TO = 100


def random_name(rng: random.Random) -> str:
    """A pronounceable made-up name of two or three syllables, 4 to 9 letters.

    Example:
        >>> random_name(random.Random(1)).isalpha()
        True
    """
    while True:
        n_syl = 2 if rng.random() < 0.8 else 3
        parts = []
        for i in range(n_syl):
            onset = rng.choice(_ONSETS) if (i > 0 or rng.random() < 0.85) else ""
            parts.append(onset + rng.choice(_VOWELS) + (rng.choice(_CODAS) if rng.random() < 0.5 else ""))
        name = "".join(parts)
        if 4 <= len(name) <= 9:
            return name.capitalize()


def two_token_split(name: str, enc) -> tuple[int, int, int] | None:
    """``(first token with space, first token without, second token)`` if ``name`` is two tokens in both forms.

    The name must encode to exactly two tokens both as ``" " + name`` (mid
    sentence) and as ``name`` (after a quote or newline), with the same second
    token, so that its second token is the same wherever it stands.

    Example:
        >>> import tiktoken
        >>> from lab.tokenizers import byte_encoding
        >>> two_token_split("Ab", byte_encoding()) is None  # " Ab" is three byte tokens
        True
    """
    spaced = enc.encode_ordinary(" " + name)
    bare = enc.encode_ordinary(name)
    if len(spaced) == 2 and len(bare) == 2 and spaced[1] == bare[1]:
        return spaced[0], bare[0], spaced[1]
    return None


def _token_names(enc, rng: random.Random, tries: int):
    """Candidate names glued from two vocabulary tokens: a capitalised piece and a lower-case piece.

    Used when the syllable names run out (small vocabularies, where few
    pronounceable names happen to be exactly two tokens).
    """
    firsts, seconds = [], []
    for t in range(enc.n_vocab):
        try:
            b = enc.decode_single_token_bytes(t)
        except KeyError:
            continue
        if not b.isascii():
            continue
        s = b.decode()
        if (s.startswith(" ") and s[1:].isalpha() and s[1].isupper() and (len(s) == 2 or s[2:].islower())
                and len(enc.encode_ordinary(s[1:])) == 1):  # " Ka" and "Ka" are both single tokens
            firsts.append(s[1:])
        elif s.isalpha() and s.islower() and len(s) >= 2:
            seconds.append(s)
    if not firsts or not seconds:
        return
    firsts.sort()
    seconds.sort()
    for _ in range(tries):
        name = rng.choice(firsts) + rng.choice(seconds)
        if 4 <= len(name) <= 9 and _pronounceable(name):
            yield name


_VOWEL = set("aeiouy")


def _pronounceable(name: str) -> bool:
    """Starts with a usual onset ("Br", "K", a vowel), has a vowel, never three consonants or vowels in a row.

    Example:
        >>> _pronounceable("Brenu"), _pronounceable("Kved")
        (True, False)
    """
    low = name.lower()
    lead = len(low) - len(low.lstrip("bcdfghjklmnpqrstvwxz"))
    if lead > 1 and low[:lead] not in _ONSETS:
        return False
    run_c = run_v = 0
    for ch in low:
        if ch in _VOWEL:
            run_v, run_c = run_v + 1, 0
        else:
            run_c, run_v = run_c + 1, 0
        if run_c >= 3 or run_v >= 3:
            return False
    return any(ch in _VOWEL for ch in low)


def name_pool(enc, forbidden: set[str], seed: int, size: int, *, train_tokens: set[int] | None = None,
                   max_tries: int = 100_000, salt: str = "test-names") -> list[str]:
    """Up to ``size`` made-up names that are two tokens under ``enc`` (see :func:`two_token_split`).

    Candidates are random syllable names (:func:`random_name`) and, if fewer
    than 100 of those qualify, names glued from a capitalised and a
    lower-case vocabulary token. ``forbidden`` holds lower-case words the name must not be
    (training names and every word of the training corpus). With
    ``train_tokens`` given, every token of the name (both forms) must also
    occur in training. Deterministic in (enc, forbidden, seed, size, salt): the
    validation split draws its pool with another ``salt`` and the test names
    forbidden, so the two pools are disjoint. Returns
    fewer names if the tokenizer has too few merges to make enough.

    Example:
        >>> from lab.tokenizers import byte_encoding
        >>> name_pool(byte_encoding(), set(), 0, 5, max_tries=100)
        []
    """
    rng = random.Random(f"{salt}:{seed}")
    syllables = (random_name(rng) for _ in range(max_tries))
    pool: list[str] = []
    seen: set[str] = set()
    glued = _token_names(enc, rng, max_tries)
    for name in itertools.chain(syllables, itertools.takewhile(lambda _: len(pool) < min(size, GLUED_UP_TO), glued)):
        low = name.lower()
        if low in seen or low in forbidden:
            continue
        seen.add(low)
        split = two_token_split(name, enc)
        if split is None:
            continue
        if train_tokens is not None and not set(split) <= train_tokens:
            continue
        pool.append(name)
        if len(pool) == size:
            break
    return pool
