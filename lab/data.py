"""Dataset cache (one token stream + eval sets + tokenizer) and the batch order.

A task's data is built once per (task config, data seed) and cached under
``$MTPLAB_CACHE_DIR`` (default ``~/.cache/mtplab``) in a folder named by a hash
of both, the data format version and the task's code (``dataset_key``)::

    polyarith-1a2b3c4d5e6f7a8b/
        meta.json        task, config, seed, token count, tokenizer hash, build time
        tokenizer.json   the tiktoken encoding (lab.tokenizers.save_encoding)
        train.bin        training tokens, uint16 (uint32 if the vocabulary needs it);
                         documents joined by the end-of-text token
        train_mask.bin   (only if the task has context-only prefixes, see Task.context)
                         uint8, 1 where the token is a loss target
        test.jsonl       the evaluation records
        valid.jsonl      (only if the task has a "valid" split) records to choose checkpoints on

The folder is built under a temporary name and renamed into place, so a
crash or a bad input never leaves a half-written cache entry, and two
processes building the same entry at once both end with a complete one.

Training windows are ``context + n`` tokens long (inputs plus the n shifted
targets) and start every ``context`` tokens. :class:`WindowOrder` visits them
in a fresh permutation per epoch, derived from (seed, epoch) alone, so the
data position of a run is one integer and resuming reproduces the order.

Example:
    >>> order = WindowOrder(num_windows=5, seed=0)
    >>> first_epoch = order.take(0, 5)
    >>> sorted(first_epoch)
    [0, 1, 2, 3, 4]
    >>> order.take(3, 4) == first_epoch[3:] + order.take(5, 2)
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.errors import UserError
from lab.fields import config_hash
from lab.tokenizers import load_encoding, save_encoding

DATA_VERSION = 3  # bump when the on-disk format changes (a task's code is hashed into the key by itself)


def cache_root() -> Path:
    """Where datasets are cached: ``$MTPLAB_CACHE_DIR`` or ``~/.cache/mtplab``."""
    return Path(os.environ.get("MTPLAB_CACHE_DIR") or Path.home() / ".cache" / "mtplab")


@dataclass
class Dataset:
    """A built dataset: tokenizer, training token stream and eval records."""

    path: Path
    enc: object  # tiktoken.Encoding
    train_tokens: np.ndarray  # memmap, 1-D
    test: list[dict]
    meta: dict
    train_mask: np.ndarray | None = None  # memmap, 1-D uint8: 1 = loss target; None = every token
    valid: list[dict] | None = None  # validation records (tasks with a "valid" split), else None


def task_code_hash(task) -> str:
    """Hash of the source of the task's module (its whole package, for a task that is one).

    Part of the cache key: edit a task's ``document()`` or generator and the next
    run builds a fresh dataset instead of training on tokens the old code made.

    Example:
        >>> from generators import registry
        >>> len(task_code_hash(registry.create("polyarith", {})))
        16
    """
    path = Path(inspect.getfile(type(task)))
    files = sorted(path.parent.glob("*.py")) if path.name == "__init__.py" or (
        path.parent.name != "generators" and (path.parent / "__init__.py").exists()) else [path]
    return config_hash([f.read_text() for f in files])


def dataset_key(task_name: str, task_config, data_seed: int, code: str = "") -> str:
    """Cache key: task name + hash of its config, seed, code hash and the format version."""
    blob = {"task": task_name, "config": dataclasses.asdict(task_config), "seed": data_seed, "v": DATA_VERSION,
            "code": code}
    return f"{task_name}-{config_hash(blob)}"


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


BUILD_CHUNK = 20_000  # training documents tokenized at a time


def _encode_chunk(task, enc, records: list, threads: int, masked: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Token stream ``<eot> doc <eot> doc ...`` of some records (int64) and its target mask (uint8).

    With ``masked`` (the task marks context parts, ``Task.context``), the
    end-of-text token and each record's context are not targets (mask 0);
    context and the rest are tokenized apart, so the boundary is exact.
    Otherwise the mask is None: every token is a target.
    """
    docs = [task.document(r) for r in records]
    if masked:
        contexts = [task.context(r) for r in records]
        for c, d in zip(contexts, docs):
            if not d.startswith(c):
                raise ValueError(f"task {task.name}: context {c!r} is not a prefix of its document {d!r}")
        heads = enc.encode_ordinary_batch(contexts, num_threads=threads)
        tails = enc.encode_ordinary_batch([d[len(c):] for c, d in zip(contexts, docs)], num_threads=threads)
        ids = [a + b for a, b in zip(heads, tails)]
    else:
        heads, ids = None, enc.encode_ordinary_batch(docs, num_threads=threads)
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    tokens = np.full(int(lengths.sum()), enc.eot_token, dtype=np.int64)
    for i, x in enumerate(ids):
        tokens[starts[i] + 1:starts[i] + 1 + len(x)] = x
    if heads is None:
        return tokens, None
    mask = np.ones(tokens.size, dtype=np.uint8)
    for i, x in enumerate(heads):
        mask[starts[i]:starts[i] + 1 + len(x)] = 0
    return tokens, mask


def build_dataset(task, data_seed: int, out: Path, *, quiet: bool = False) -> None:
    """Build the cache folder ``out`` (which must not exist yet) for ``task``."""
    t0 = time.time()
    _log(f"building {task.name} dataset (seed {data_seed}) ...", quiet)
    train = task.build("train", data_seed)
    if not train:
        raise UserError(f"task {task.name} produced no training examples; check its config")
    enc = task.make_tokenizer(train)
    test = task.build("test", data_seed)
    valid = task.build("valid", data_seed) if "valid" in task.splits else None
    dtype = np.uint16 if enc.n_vocab <= 65536 else np.uint32
    threads = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # Tokenized a chunk at a time and streamed to disk: peak memory stays at one chunk of
        # Python token lists however large the corpus (a list of ints costs ~36 bytes a token).
        masked = any(task.context(r) for r in train)  # a mask stream only if some record has context
        size = target_tokens = 0
        with open(tmp / "train.bin", "wb") as f_tok, \
                (open(tmp / "train_mask.bin", "wb") if masked else contextlib.nullcontext()) as f_mask:
            for lo in range(0, len(train), BUILD_CHUNK):
                tokens, mask = _encode_chunk(task, enc, train[lo:lo + BUILD_CHUNK], threads, masked)
                tokens.astype(dtype).tofile(f_tok)
                size += tokens.size
                if masked:
                    mask.tofile(f_mask)
                target_tokens += int(mask.sum()) if masked else tokens.size
        save_encoding(enc, tmp / "tokenizer.json")
        for split, records in (("test", test), ("valid", valid)):
            if records is not None:
                with open(tmp / f"{split}.jsonl", "w") as f:
                    for r in records:
                        f.write(json.dumps(r) + "\n")
        meta = {
            "task": task.name, "config": dataclasses.asdict(task.config), "seed": data_seed,
            "version": DATA_VERSION, "train_examples": len(train), "test_examples": len(test),
            "valid_examples": len(valid) if valid is not None else 0, "code_hash": task_code_hash(task),
            "train_tokens": size, "dtype": np.dtype(dtype).name, "n_vocab": enc.n_vocab,
            "masked": masked, "target_tokens": target_tokens,
            "tokenizer_hash": config_hash((tmp / "tokenizer.json").read_text()),
            "build_seconds": round(time.time() - t0, 2),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished the same entry first: keep theirs
            if not (out / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"built {len(train):,} train / {len(test):,} test examples, {size:,} tokens "
         f"in {time.time() - t0:.1f}s -> {out}", quiet)


def prepare(task, data_seed: int = 0, *, root: Path | None = None, quiet: bool = False,
            rebuild: bool = False) -> Dataset:
    """Load the task's dataset from the cache, building it first if needed.

    The cache entry is keyed by the task's config, the data seed and the
    source of the task's code (:func:`task_code_hash`), and checked against
    its ``meta.json`` on load: a damaged entry is a UserError that says to
    rebuild it. ``rebuild`` builds the entry afresh and swaps it in (the old
    one stays in place if the build fails).

    Example:
        >>> from generators import registry
        >>> task = registry.create("polyarith", {"train_examples": 50, "test_per_op": 2})
        >>> ds = prepare(task, 0, root=Path(tempfile.mkdtemp()), quiet=True)
        >>> ds.meta["test_examples"], int(ds.train_tokens[0]) == ds.enc.eot_token
        (20, True)
    """
    root = Path(root) if root else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / dataset_key(task.name, task.config, data_seed, task_code_hash(task))
    if rebuild and path.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=root))
        os.rename(path, trash / "entry")
        try:
            build_dataset(task, data_seed, path, quiet=quiet)
        except BaseException:
            if not path.exists():
                os.rename(trash / "entry", path)
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    if not (path / "meta.json").exists():
        build_dataset(task, data_seed, path, quiet=quiet)
    try:
        meta = json.loads((path / "meta.json").read_text())
        enc = load_encoding(path / "tokenizer.json")
        tokens = np.memmap(path / "train.bin", dtype=np.dtype(meta["dtype"]), mode="r")
        mask = np.memmap(path / "train_mask.bin", dtype=np.uint8, mode="r") if meta.get("masked") else None
        with open(path / "test.jsonl") as f:
            test = [json.loads(line) for line in f]
        valid = None
        if meta.get("valid_examples"):
            with open(path / "valid.jsonl") as f:
                valid = [json.loads(line) for line in f]
        expected = meta["train_tokens"] * np.dtype(meta["dtype"]).itemsize
        if (path / "train.bin").stat().st_size != expected:
            raise ValueError(f"train.bin has {(path / 'train.bin').stat().st_size} bytes, meta.json says {expected}")
        if mask is not None and mask.size != meta["train_tokens"]:
            raise ValueError(f"train_mask.bin has {mask.size} bytes, meta.json says {meta['train_tokens']}")
        if len(test) != meta["test_examples"]:
            raise ValueError(f"test.jsonl has {len(test)} records, meta.json says {meta['test_examples']}")
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"dataset cache {path} is damaged ({e}); rebuild it with --rebuild "
                        f"(mtplab train or generate), or delete that folder") from None
    return Dataset(path=path, enc=enc, train_tokens=tokens, test=test, meta=meta, train_mask=mask, valid=valid)


class WindowOrder:
    """Which training window comes at each data position, epoch after epoch.

    Position p is window ``perm_e[p % num_windows]`` with ``e = p // num_windows``
    and ``perm_e`` a permutation drawn from (seed, e). Stateless: the data
    position of a run is the number of windows it has consumed.
    """

    def __init__(self, num_windows: int, seed: int):
        self.num_windows, self.seed = num_windows, seed
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            self._perm_epoch = epoch
        return self._perm

    def take(self, position: int, count: int) -> list[int]:
        out = []
        while count > 0:
            epoch, offset = divmod(position, self.num_windows)
            chunk = self._permutation(epoch)[offset:offset + count]
            out.extend(int(i) for i in chunk)
            position += len(chunk)
            count -= len(chunk)
        return out


class Windows:
    """Training windows of a token stream: (count, context + n) int64 arrays.

    With a ``mask`` (1 = loss target), ``batch`` also returns the windows' mask.

    ``heldout`` windows at the end of the stream (at most a tenth of them) are
    never trained on; one window between them and the training windows is
    skipped too, so no held-out token is a training target. ``heldout_batch``
    returns them and ``seen_batch`` the first windows the run trains on
    (data positions 0, 1, ...): comparing the two losses shows memorization.

    Example:
        >>> w = Windows(np.arange(100, dtype=np.uint16), context=10, n=2, seed=0)
        >>> tokens, mask = w.batch(0, 3)
        >>> w.num_windows, tokens.shape, mask
        (9, (3, 12), None)
        >>> w = Windows(np.arange(1000, dtype=np.uint16), context=10, n=2, seed=0, heldout=5)
        >>> w.num_windows, w.heldout_batch()[0][:, 0].tolist()  # 99 windows: 93 train, 1 gap, 5 held out
        (93, [940, 950, 960, 970, 980])
    """

    def __init__(self, tokens: np.ndarray, context: int, n: int, seed: int, mask: np.ndarray | None = None,
                 heldout: int = 0):
        self.tokens, self.mask, self.context, self.span = tokens, mask, context, context + n
        total = (len(tokens) - self.span) // context + 1 if len(tokens) >= self.span else 0
        if total < 1:
            raise UserError(f"the training set has {len(tokens)} tokens, fewer than one window of "
                            f"{self.span} (context + n); generate more examples or lower train.context")
        self.heldout = min(heldout, total // 10)
        self.num_windows = total - self.heldout - (1 if self.heldout else 0)
        self.order = WindowOrder(self.num_windows, seed)

    def _windows(self, indices) -> tuple[np.ndarray, np.ndarray | None]:
        starts = [i * self.context for i in indices]
        tokens = np.stack([self.tokens[s:s + self.span] for s in starts]).astype(np.int64)
        if self.mask is None:
            return tokens, None
        return tokens, np.stack([self.mask[s:s + self.span] for s in starts]).astype(bool)

    def batch(self, position: int, count: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self._windows(self.order.take(position, count))

    def heldout_batch(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The held-out windows (never trained on)."""
        first = self.num_windows + 1
        return self._windows(range(first, first + self.heldout))

    def seen_batch(self) -> tuple[np.ndarray, np.ndarray | None]:
        """As many windows as are held out: the first ones trained on (seen once per epoch)."""
        return self._windows(self.order.take(0, self.heldout))

    def epochs(self, position: int) -> float:
        return position / self.num_windows
