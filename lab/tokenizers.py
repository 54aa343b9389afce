"""Tokenizers as real ``tiktoken.Encoding`` objects, built offline.

tiktoken cannot download its encodings here, so every encoding is built from
ranks we make (raw bytes) or train (the induction task's BPE), and saved next
to the dataset as JSON so it reloads exactly. Every encoding contains all 256
single bytes (tiktoken panics on text it cannot cover otherwise) and one
special end-of-text token.

Example:
    >>> enc = byte_encoding()
    >>> enc.encode("(01234+56000)=")[:3]
    [40, 48, 49]
    >>> enc.decode(enc.encode("x^2")) == "x^2"
    True
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import tiktoken

EOT = "<|endoftext|>"
# Split on runs of letters, digits, spaces and other characters (GPT-2 style, simplified).
DEFAULT_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# One byte = one token: no pre-splitting needed.
BYTE_PAT = r"""(?s:.)+"""


def make_encoding(name: str, ranks: dict[bytes, int], pat_str: str = DEFAULT_PAT) -> tiktoken.Encoding:
    """A tiktoken Encoding from mergeable ranks; adds the end-of-text token.

    Example:
        >>> enc = make_encoding("demo", {bytes([i]): i for i in range(256)})
        >>> enc.n_vocab, enc.eot_token
        (257, 256)
    """
    missing = [i for i in range(256) if bytes([i]) not in ranks]
    if missing:
        raise ValueError(f"encoding '{name}' lacks {len(missing)} single bytes; tiktoken needs all 256")
    return tiktoken.Encoding(name=name, pat_str=pat_str, mergeable_ranks=ranks,
                             special_tokens={EOT: max(ranks.values()) + 1})


def byte_encoding() -> tiktoken.Encoding:
    """The byte-level encoding: token i is byte i, plus end-of-text (257 tokens)."""
    return make_encoding("bytes", {bytes([i]): i for i in range(256)}, BYTE_PAT)


def save_encoding(enc: tiktoken.Encoding, path: str | os.PathLike) -> None:
    """Write an encoding as JSON (ranks base64-encoded) so it reloads exactly."""
    data = {
        "name": enc.name,
        "pat_str": enc._pat_str,
        "ranks": {base64.b64encode(k).decode(): v for k, v in enc._mergeable_ranks.items()},
        "special_tokens": enc._special_tokens,
    }
    Path(path).write_text(json.dumps(data))


def load_encoding(path: str | os.PathLike) -> tiktoken.Encoding:
    """Read an encoding written by :func:`save_encoding`.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "tok.json")
        >>> save_encoding(byte_encoding(), p)
        >>> load_encoding(p).encode("abc") == byte_encoding().encode("abc")
        True
    """
    data = json.loads(Path(path).read_text())
    ranks = {base64.b64decode(k): v for k, v in data["ranks"].items()}
    return tiktoken.Encoding(name=data["name"], pat_str=data["pat_str"], mergeable_ranks=ranks,
                             special_tokens=data["special_tokens"])
