"""Stories in and out: a user's story file, names in text, renaming, token positions, statistics.

Example:
    >>> text = "Mia saw Tom. Tom waved at Mia."
    >>> find_names(text)
    ['Mia', 'Tom']
    >>> new, names = rename(text, {"Mia": "Drovin", "Tom": "Kelu"})
    >>> new
    'Drovin saw Kelu. Kelu waved at Drovin.'
    >>> names[0]
    {'name': 'Drovin', 'original': 'Mia', 'spans': [[0, 6], [31, 37]]}
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import os
import re
from collections import Counter
from typing import Sequence

import numpy as np
import regex

from lab.errors import UserError
from lab.tokenizers import EOT

from .names import name_list

# ---------------------------------------------------------------------------
# a user's stories file


def read_stories_file(path: str | os.PathLike) -> list[str]:
    """The stories of a UTF-8 text file, in order.

    Three layouts are recognised: stories separated by ``<|endoftext|>`` (the
    TinyStories ``.txt`` files), stories separated by blank lines (a story may
    then span several lines), or one story per line (no blank line anywhere).
    An unreadable or empty file raises :class:`UserError`.

    Example:
        >>> import tempfile
        >>> p = tempfile.mktemp(suffix=".txt")
        >>> _ = open(p, "w").write("Tom ran.\\nTom sat.\\n\\nMia sang.\\n")
        >>> read_stories_file(p)
        ['Tom ran.\\nTom sat.', 'Mia sang.']
    """
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError(f"stories file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read stories file {path}: {e}") from None
    if EOT in raw:
        parts = raw.split(EOT)
    elif re.search(r"\n[ \t]*\n", raw):
        parts = re.split(r"\n[ \t]*\n", raw)
    else:
        parts = raw.splitlines()
    stories = [p.strip() for p in parts if p.strip()]
    if not stories:
        raise UserError(f"stories file {path} contains no stories (it is empty or only whitespace)")
    return stories


# ---------------------------------------------------------------------------
# names in text

_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")


def find_names(text: str, names: dict | set | None = None) -> list[str]:
    """Character names in ``text`` (capitalised words on the name list), in order of first mention.

    Example:
        >>> find_names("Once upon a time, Lily met a dog. Lily smiled.")
        ['Lily']
    """
    names = name_list() if names is None else names
    seen: dict[str, None] = {}
    for m in _CAPITALISED.finditer(text):
        w = m.group()
        if w in names and w not in seen:
            seen[w] = None
    return list(seen)


def mentions(text: str, name: str) -> list[list[int]]:
    """Character spans ``[start, end]`` of every whole-word occurrence of ``name``.

    Example:
        >>> mentions("Tom and Tommy saw Tom's cat.", "Tom")
        [[0, 3], [18, 21]]
    """
    return [[m.start(), m.end()] for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text)]


def rename(text: str, mapping: dict[str, str]) -> tuple[str, list[dict]]:
    """Replace every whole-word occurrence of each name by its new name; spans refer to the new text.

    Example:
        >>> rename("Ann met Bo.", {"Ann": "Kelu"})
        ('Kelu met Bo.', [{'name': 'Kelu', 'original': 'Ann', 'spans': [[0, 4]]}])
    """
    if not mapping:
        return text, []
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(n) for n in sorted(mapping, key=len, reverse=True)) + r")(?!\w)")
    out: list[str] = []
    spans: dict[str, list[list[int]]] = {n: [] for n in mapping}
    pos = length = 0
    for m in pattern.finditer(text):
        out.append(text[pos:m.start()])
        length += m.start() - pos
        new = mapping[m.group(1)]
        spans[m.group(1)].append([length, length + len(new)])
        out.append(new)
        length += len(new)
        pos = m.end()
    out.append(text[pos:])
    names = [{"name": mapping[n], "original": n, "spans": spans[n]} for n in mapping]
    return "".join(out), names


# ---------------------------------------------------------------------------
# token positions


def token_offsets(tokens: Sequence[int], enc) -> list[int]:
    """Character offset (in the decoded text) where each token starts, plus one entry for the end.

    A token that starts inside a multi-byte character (byte-level BPE can
    split one) gets that character's offset.

    Example:
        >>> from lab.tokenizers import byte_encoding
        >>> token_offsets(byte_encoding().encode("hé!"), byte_encoding())
        [0, 1, 1, 2, 3]
    """
    pieces = [enc.decode_single_token_bytes(t) for t in tokens]
    byte_starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces], dtype=np.int64)]).astype(np.int64)
    data = b"".join(pieces)
    if data.isascii():  # bytes are characters
        return byte_starts.tolist()
    # character index of every byte: count the bytes that start a UTF-8 character (not 0b10xxxxxx)
    arr = np.frombuffer(data, dtype=np.uint8)
    starts_char = (arr & 0xC0) != 0x80
    char_of_byte = np.concatenate([np.cumsum(starts_char) - 1, [int(starts_char.sum())]])
    return char_of_byte[byte_starts].tolist()


def annotate(record: dict, enc) -> dict:
    """A copy of a test record with token ids and, per name, the token positions of each occurrence.

    ``tokens`` is ``enc.encode_ordinary(record["text"])`` (no end-of-text
    token; :func:`~generators.induction.metric.evaluate` prepends one and
    shifts positions by one). For each occurrence span, ``positions`` lists
    the indices of every token that overlaps it; for a two-token name that is
    ``[p, p + 1]``. A token that starts with the space before the name counts
    as the name's first token.

    Example:
        >>> from lab.tokenizers import byte_encoding
        >>> r = annotate({"text": "Hi Bo", "names": [{"name": "Bo", "original": "Al", "spans": [[3, 5]]}]}, byte_encoding())
        >>> r["names"][0]["positions"]
        [[3, 4]]
    """
    tokens = enc.encode_ordinary(record["text"])
    starts = token_offsets(tokens, enc)
    names = []
    for n in record["names"]:
        positions = []
        for s, e in n["spans"]:
            # tokens overlapping [s, e): start < e and end > s
            positions.append(_overlapping(starts, s, e))
        names.append({**n, "positions": positions})
    return {**record, "tokens": tokens, "names": names}


def _overlapping(starts: list[int], s: int, e: int) -> list[int]:
    """Indices i with starts[i] < e and starts[i+1] > s, i.e. tokens overlapping [s, e)."""
    i = max(bisect.bisect_right(starts, s) - 1, 0)  # the token containing character s
    out = []
    while i < len(starts) - 1 and starts[i] < e:
        if starts[i + 1] > s:
            out.append(i)
        i += 1
    return out


# ---------------------------------------------------------------------------
# statistics

STOCK_OPENERS = ("Once upon a time", "One day", "Once there was", "There once was", "There was once", "Long ago")
_WORDS = regex.compile(r"\p{L}+")
GZIP_SAMPLE_STORIES = 20_000  # gzip's window is 32 KB: the ratio of a sample is that of the whole


def distinct_ngrams(seqs: Sequence[Sequence[int]], n: int) -> int:
    """Number of distinct n-grams of token ids, never crossing a story boundary.

    n-grams are hashed to 64 bits (a collision among tens of millions of
    n-grams has probability ~1e-5).

    Example:
        >>> distinct_ngrams([[1, 2, 3, 1, 2, 3], [1, 2]], 2)
        3
    """
    seqs = [s for s in seqs if len(s) >= n]
    if not seqs:
        return 0
    hashes = []
    mult = np.uint64(0x9E3779B97F4A7C15)
    for c0 in range(0, len(seqs), 20000):
        chunk = seqs[c0:c0 + 20000]
        lengths = np.fromiter((len(s) for s in chunk), dtype=np.int64, count=len(chunk))
        flat = np.fromiter(itertools.chain.from_iterable(chunk), dtype=np.uint64, count=int(lengths.sum()))
        # a window starting at i is valid if it ends inside the same story
        valid = np.ones(len(flat) - n + 1, dtype=bool)
        ends = np.cumsum(lengths)
        for k in range(1, n):
            idx = ends - k
            valid[idx[idx < len(valid)]] = False
        h = np.zeros(len(flat) - n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                h = h * mult + flat[k:len(flat) - n + 1 + k] + np.uint64(1)
        hashes.append(h[valid])
    allh = np.sort(np.concatenate(hashes))
    return int(1 + np.count_nonzero(allh[1:] != allh[:-1])) if len(allh) else 0


def corpus_stats(texts: Sequence[str], names: Sequence[Sequence[str]], enc) -> dict[str, float]:
    """The statistics printed by ``mtplab generate induction --stats`` for one split.

    ``names[i]`` are the character names of story i. Keys: ``stories``,
    ``tokens``, ``tokens_per_story``, ``words_per_story``, ``min_words``,
    ``max_words``, ``distinct_words`` (lower-cased word types),
    ``distinct_words_excluding_names`` (the same without character names),
    ``distinct_3grams_per_1k_tokens`` and ``distinct_5grams_per_1k_tokens``
    (distinct token n-grams over the whole split per 1000 tokens: this falls
    as a split grows, so compare splits of similar size; a memorisable,
    templated corpus scores low), ``names_per_story``,
    ``mentions_per_name`` (average occurrences of a character's name in its
    story), ``gzip_ratio`` (raw bytes / gzip bytes: higher = more repetitive),
    ``dialogue_fraction`` (stories with a quotation mark),
    ``stock_opener_fraction`` (stories that begin with "Once upon a time",
    "One day", "Once there was", "There once was", "There was once" or "Long
    ago"), ``once_upon_a_time_fraction`` (anywhere in the story) and
    ``top_opening_fraction`` (share of the most common first three words).

    Example:
        >>> from lab.tokenizers import byte_encoding
        >>> s = corpus_stats(["Mia ran. Mia sat.", "One day Bo hid. Bo ran."], [["Mia"], ["Bo"]], byte_encoding())
        >>> s["stories"], s["mentions_per_name"], s["stock_opener_fraction"]
        (2.0, 2.0, 0.5)
    """
    n = len(texts)
    if n == 0:
        return {"stories": 0.0}
    tokens = enc.encode_ordinary_batch(list(texts), num_threads=max(1, min(8, os.cpu_count() or 1)))
    n_tok = sum(len(t) for t in tokens)
    word_counts = [len(t.split()) for t in texts]
    vocab: set[str] = set()
    for i in range(0, n, 5000):
        vocab.update(w.lower() for w in _WORDS.findall("\n".join(texts[i:i + 5000])))
    n_mentions = n_names = 0
    for text, ns in zip(texts, names):
        if ns:
            caps = Counter(_CAPITALISED.findall(text))
            for name in ns:  # names are single capitalised words (list names or made-up ones)
                n_mentions += caps[name] if _CAPITALISED.fullmatch(name) else len(mentions(text, name))
                n_names += 1
    joined = "\n\n".join(texts[:GZIP_SAMPLE_STORIES]).encode("utf-8")
    openings: dict[str, int] = {}
    for t in texts:
        key = " ".join(t.split()[:3])
        openings[key] = openings.get(key, 0) + 1
    per_k = 1000.0 / max(n_tok, 1)
    return {
        "stories": float(n),
        "tokens": float(n_tok),
        "tokens_per_story": n_tok / n,
        "words_per_story": sum(word_counts) / n,
        "min_words": float(min(word_counts)),
        "max_words": float(max(word_counts)),
        "distinct_words": float(len(vocab)),
        "distinct_words_excluding_names": float(len(vocab - {x.lower() for ns in names for x in ns})),
        "distinct_3grams_per_1k_tokens": distinct_ngrams(tokens, 3) * per_k,
        "distinct_5grams_per_1k_tokens": distinct_ngrams(tokens, 5) * per_k,
        "names_per_story": n_names / n,
        "mentions_per_name": n_mentions / max(n_names, 1),
        "gzip_ratio": len(joined) / len(gzip.compress(joined, compresslevel=6)),
        "dialogue_fraction": sum('"' in t or "\u201c" in t for t in texts) / n,
        "stock_opener_fraction": sum(t.startswith(STOCK_OPENERS) for t in texts) / n,
        "once_upon_a_time_fraction": sum("once upon a time" in t.lower() for t in texts) / n,
        "top_opening_fraction": max(openings.values()) / n,
    }
