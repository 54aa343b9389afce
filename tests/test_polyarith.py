"""Tests of the polyarith task: ring arithmetic against a sympy oracle, the
serialization, determinism, train/test exclusion, and evaluation (default
ring; the knobs p, k, ops and the validation split: test_polyarith_knobs.py)."""

from __future__ import annotations

import json

import pytest
import sympy
from test_polyarith_knobs import parse as parse_k, sympy_value as sympy_value_pk  # the k-digit parser; tests/ is on sys.path
import torch

from generators import registry
from generators.polyarith import (PolyArith, PolyArithConfig, add, compose, evaluate_tree, is_correct, mul, neg)
from lab.errors import UserError
from lab.tokenizers import byte_encoding

X = sympy.Symbol("X")


def task_with(**overrides) -> PolyArith:
    return PolyArith(PolyArithConfig(**overrides))


@pytest.fixture(scope="module")
def oracle_test_set() -> list[dict]:
    """300 test expressions for every m in 1..10."""
    return task_with(train_examples=1, test_per_op=300).build("test", 0)


# ---------------------------------------------------------------------------
# Ring operations: hand-computed cases and a sympy oracle
# ---------------------------------------------------------------------------

def test_ops_hand_computed():
    assert neg((1, 0, 6, 0, 3)) == (6, 0, 1, 0, 4)
    assert neg((0, 0, 0, 0, 0)) == (0, 0, 0, 0, 0)
    assert add((3, 4, 0, 0, 6), (5, 3, 1, 0, 1)) == (1, 0, 1, 0, 0)
    assert mul((1, 1, 0, 0, 0), (1, 1, 0, 0, 0)) == (1, 2, 1, 0, 0)  # (1+X)^2
    assert mul((0, 0, 1, 0, 0), (0, 0, 0, 1, 0)) == (0, 0, 0, 0, 0)  # X^5 = 0
    assert mul((0, 1, 0, 0, 1), (0, 1, 0, 0, 0)) == (0, 0, 1, 0, 0)  # (X + X^4) X = X^2 + X^5
    assert mul((3, 0, 0, 0, 0), (5, 0, 0, 0, 4)) == (1, 0, 0, 0, 5)  # 15 = 1, 12 = 5 mod 7
    # compose: q has a nonzero constant term
    assert compose((1, 2, 0, 0, 0), (3, 1, 0, 0, 0)) == (0, 2, 0, 0, 0)  # 1 + 2(3+X) = 7 + 2X
    assert compose((0, 1, 1, 0, 0), (2, 1, 0, 0, 0)) == (6, 5, 1, 0, 0)  # (2+X) + (2+X)^2
    # (1+X+X^2)^3 = 1 + 3X + 6X^2 + 7X^3 + 6X^4 + 3X^5 + X^6 -> truncated, mod 7
    assert compose((0, 0, 0, 1, 0), (1, 1, 1, 0, 0)) == (1, 3, 6, 0, 6)
    assert compose((0, 1, 0, 0, 0), (4, 3, 2, 1, 0)) == (4, 3, 2, 1, 0)  # X @ q = q
    assert compose((4, 3, 2, 1, 0), (0, 1, 0, 0, 0)) == (4, 3, 2, 1, 0)  # p @ X = p
    assert compose((5, 0, 0, 0, 0), (6, 6, 6, 6, 6)) == (5, 0, 0, 0, 0)  # constants ignore q


def sympy_value(tree: dict) -> sympy.Poly:
    """Independent evaluation: sympy polynomials over GF(7), reduced mod X^5 after each op."""
    return sympy_value_pk(tree, 7, 5)


def sympy_coeffs(poly: sympy.Poly) -> list[int]:
    # sympy's GF(7) uses symmetric representatives (-3..3): map back to 0..6
    return [int(poly.coeff_monomial(X ** i)) % 7 for i in range(5)]


@pytest.mark.parametrize("m", range(1, 11))
def test_sympy_oracle_agrees_on_3000_expressions(oracle_test_set, m):
    """300 expressions per m (one test per m: sympy takes ~7 ms an expression)."""
    records = [rec for rec in oracle_test_set if rec["ops"] == m]
    assert len(oracle_test_set) == 3000 and len(records) == 300
    mismatches = 0
    for rec in records:
        expected = sympy_coeffs(sympy_value(rec["expr"]))
        mismatches += expected != rec["result"] or "".join(map(str, expected)) != rec["answer"]
    assert mismatches == 0
    # the oracle covered every operation at every difficulty
    seen = set()

    def ops_in(tree):
        if "op" in tree:
            seen.add(tree["op"])
            for t in tree["args"]:
                ops_in(t)
    for rec in records:
        ops_in(rec["expr"])
    assert seen == {"neg", "add", "mul", "compose"}


def test_compose_with_constant_term_matches_sympy_expansion():
    p, q = (3, 1, 4, 1, 5), (2, 6, 5, 3, 5)
    full = sympy.Poly(sum(c * X ** i for i, c in enumerate(p)), X, modulus=7).compose(
        sympy.Poly(sum(c * X ** i for i, c in enumerate(q)), X, modulus=7))
    assert full.degree() == 16  # expanded in F7[X], truncated only at the end
    assert tuple(sympy_coeffs(full)) == compose(p, q)


# ---------------------------------------------------------------------------
# Serialization
# ---------------------------------------------------------------------------

def parse(text: str) -> dict:
    """Recursive-descent parser of the default prompt grammar (independent of the generator), digits 0..6."""
    tree = parse_k(text, 5)
    assert all(0 <= c <= 6 for c in _leaves(tree)), text
    return tree


def _leaves(tree: dict) -> list[int]:
    return tree["poly"] if "poly" in tree else [c for t in tree["args"] for c in _leaves(t)]


def count_ops(tree: dict) -> int:
    return 0 if "poly" in tree else 1 + sum(count_ops(t) for t in tree["args"])


def test_prompt_parses_back_to_tree(oracle_test_set):
    for rec in oracle_test_set:
        tree = parse(rec["prompt"])
        assert tree == rec["expr"]
        assert count_ops(tree) == rec["ops"]
    assert parse("--(30162@-00001)=") == {"op": "neg", "args": [{"op": "neg", "args": [
        {"op": "compose", "args": [{"poly": [3, 0, 1, 6, 2]}, {"op": "neg", "args": [{"poly": [0, 0, 0, 0, 1]}]}]}]}]}


def test_records_documents_and_json():
    task = task_with(train_examples=50, test_per_op=5)
    enc = byte_encoding()
    for rec in task.build("train", 0) + task.build("test", 0):
        assert set(rec) == {"prompt", "answer", "result", "ops", "expr"}
        assert json.loads(json.dumps(rec)) == rec
        assert list(evaluate_tree(rec["expr"])) == rec["result"]
        doc = task.document(rec)
        assert doc == rec["prompt"] + rec["answer"] + "\n" and doc.count("\n") == 1
        assert len(enc.encode(doc)) == len(doc)  # one character = one token
    stats = task.stats(task.build("test", 0), enc)
    assert stats["examples"] == 50 and all(stats[f"examples/ops={m}"] == 5 for m in range(1, 11))


# ---------------------------------------------------------------------------
# Determinism, exclusion, distribution
# ---------------------------------------------------------------------------

def test_determinism():
    task = task_with(train_examples=300, test_per_op=20)
    train, test = task.build("train", 3), task.build("test", 3)
    fresh = task_with(train_examples=300, test_per_op=20)
    assert fresh.build("train", 3) == train and fresh.build("test", 3) == test
    for i in (0, 1, 117, 299):
        assert fresh.example("train", 3, i) == train[i]
    for i in (0, 19, 20, 150, 199):
        assert task_with(train_examples=300, test_per_op=20).example("test", 3, i) == test[i]
    other = task.build("train", 4)
    assert sum(a != b for a, b in zip(train, other)) > 290
    assert task.build("test", 4) != test
    # test examples depend only on (seed, m, j): more per m appends, fewer m keeps a prefix
    bigger = task_with(train_examples=300, test_per_op=30).build("test", 3)
    assert [r for r in bigger if r["ops"] == 2][:20] == [r for r in test if r["ops"] == 2]
    with pytest.raises(IndexError):
        task.example("train", 3, 300)


def test_no_test_prompt_in_train_even_when_raw_draws_collide():
    # m = 1 only: a neg expression has 7^5 prompts, so a 2000-example test set gets hit
    task = task_with(train_examples=3000, train_min_ops=1, train_max_ops=1,
                     test_min_ops=1, test_max_ops=1, test_per_op=2000)
    test_prompts = {r["prompt"] for r in task.build("test", 0)}
    held_out = test_prompts | {r["prompt"] for r in task.build("valid", 0)}
    raw = [task.draw("train", 0, i) for i in range(3000)]
    collided = [i for i, r in enumerate(raw) if r["prompt"] in held_out]
    assert sum(r["prompt"] in test_prompts for r in raw) > 5  # without exclusion, train would contain test prompts
    train = task.build("train", 0)
    assert not any(r["prompt"] in held_out for r in train)
    for i in collided:  # resampled deterministically, and example() agrees
        assert train[i] != raw[i] and task.example("train", 0, i) == train[i]
    untouched = [i for i in range(3000) if i not in set(collided)]
    assert all(train[i] == raw[i] for i in untouched)


def test_default_config_has_real_collisions_and_excludes_them():
    task = task_with(train_examples=20_000)
    excluded = task.test_prompts(0)
    assert any(task.draw("train", 0, i)["prompt"] in excluded for i in range(20_000))
    assert not any(r["prompt"] in excluded for r in task.build("train", 0))


def test_ops_distribution():
    task = task_with(train_examples=4000, train_min_ops=2, train_max_ops=4, test_min_ops=1, test_max_ops=6, test_per_op=7)
    counts = {}
    for r in task.build("train", 0):
        counts[r["ops"]] = counts.get(r["ops"], 0) + 1
    assert set(counts) == {2, 3, 4} and min(counts.values()) > 1200
    test = task.build("test", 0)
    assert [r["ops"] for r in test] == [m for m in range(1, 7) for _ in range(7)]
    assert task.in_domain == ("accuracy/ops=2", "accuracy/ops=3", "accuracy/ops=4")
    assert task.ood == ("accuracy/ops=5", "accuracy/ops=6")


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

class OracleModel(torch.nn.Module):
    """Answers correctly for m <= max_ops and wrongly above, via ``generate``."""

    def __init__(self, enc, test: list[dict], max_ops: int = 99):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.enc, self.max_ops = enc, max_ops
        self.by_prompt = {r["prompt"]: r for r in test}
        self.seen: list[str] = []

    def generate(self, idx, max_new_tokens, stop_token=None):
        assert max_new_tokens == 6 and stop_token == self.enc.encode("\n")[0]
        rows = []
        for row in idx.tolist():
            assert row[0] == self.enc.eot_token  # the example boundary seen in training
            rec = self.by_prompt[self.enc.decode(row[1:])]
            self.seen.append(rec["prompt"])
            answer = rec["answer"]
            if rec["ops"] > self.max_ops:
                answer = str((int(answer[0]) + 1) % 7) + answer[1:]
            rows.append(self.enc.encode(answer + "\n"))
        return torch.tensor(rows, dtype=torch.long)


def test_evaluate_oracle_and_partial_oracle():
    enc = byte_encoding()
    task = task_with(train_examples=10, test_per_op=4)
    test = task.build("test", 0)
    keys = {f"accuracy/ops={m}" for m in range(1, 11)} | {"accuracy/in_domain", "accuracy/ood", "accuracy/all",
                                                          "digit_accuracy/in_domain", "digit_accuracy/ood",
                                                          "digit_accuracy/all"}
    metrics = task.evaluate(OracleModel(enc, test), test, enc, "cpu")
    assert set(metrics) == keys and all(v == 1.0 for v in metrics.values())
    partial = OracleModel(enc, test, max_ops=3)
    metrics = task.evaluate(partial, test, enc, "cpu")
    assert [metrics[f"accuracy/ops={m}"] for m in range(1, 11)] == [1.0] * 3 + [0.0] * 7
    assert metrics["accuracy/in_domain"] == pytest.approx(3 / 5)
    assert metrics["accuracy/ood"] == 0.0 and metrics["accuracy/all"] == pytest.approx(0.3)
    # the wrong answers have one wrong digit of five: digit accuracy 4/5 there
    assert metrics["digit_accuracy/ood"] == pytest.approx(0.8)
    assert metrics["digit_accuracy/in_domain"] == pytest.approx((3 * 1.0 + 2 * 0.8) / 5)
    # limit scores the first `limit` examples of each m
    limited = OracleModel(enc, test)
    task.evaluate(limited, test, enc, "cpu", limit=2)
    first_two = [r["prompt"] for i, r in enumerate(test) if i % 4 < 2]  # test is sorted by m, 4 per m
    assert sorted(limited.seen) == sorted(first_two)


def test_evaluate_without_ood_range_omits_ood():
    enc = byte_encoding()
    task = task_with(train_examples=10, test_max_ops=5, test_per_op=2)
    test = task.build("test", 0)
    metrics = task.evaluate(OracleModel(enc, test), test, enc, "cpu")
    assert "accuracy/ood" not in metrics and metrics["accuracy/in_domain"] == 1.0


@pytest.fixture
def one_torch_thread():
    # On a busy 2-core machine, torch's intra-op threads contend: a 20-prompt eval of a
    # tiny model takes ~8 s with 2 threads and ~0.05 s with 1.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_evaluate_random_model(one_torch_thread):
    from lab.config import ModelConfig
    from lab.model import MTPModel

    torch.manual_seed(0)
    enc = byte_encoding()
    task = task_with(train_examples=10, test_per_op=2)
    test = task.build("test", 0)
    model = MTPModel(ModelConfig(size="custom", d_model=32, layers=2, n_heads=2, vocab_size=enc.n_vocab).resolved())
    metrics = task.evaluate(model, test, enc, "cpu")
    keys = {f"accuracy/ops={m}" for m in range(1, 11)} | {"accuracy/in_domain", "accuracy/ood", "accuracy/all",
                                                          "digit_accuracy/in_domain", "digit_accuracy/ood",
                                                          "digit_accuracy/all"}
    assert set(metrics) == keys and all(0.0 <= v <= 1.0 for v in metrics.values())


def test_is_correct():
    assert is_correct("30162\n", "30162")
    assert not is_correct("30162", "3016")
    assert not is_correct("301620", "30162")  # did not stop after the answer
    assert not is_correct("\n", "30162")


# ---------------------------------------------------------------------------
# Config and registry
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, field", [
    ({"train_examples": 0}, "train_examples"),
    ({"test_per_op": -1}, "test_per_op"),
    ({"train_min_ops": 0}, "train_min_ops"),
    ({"train_min_ops": 4, "train_max_ops": 3}, "train_min_ops"),
    ({"test_min_ops": 8, "test_max_ops": 7}, "test_min_ops"),
    ({"test_min_ops": 6, "test_max_ops": 8}, "test_min_ops"),  # no in-domain m in the test set
    ({"test_max_ops": 1000}, "test_max_ops"),
    ({"valid_per_op": -1}, "valid_per_op"),
    ({"p": 4}, "polyarith.p"),
    ({"k": 0}, "polyarith.k"),
    ({"ops": "sub"}, "polyarith.ops"),
])
def test_bad_config_raises_user_error(overrides, field):
    with pytest.raises(UserError, match=field):
        PolyArithConfig(**overrides)
    with pytest.raises(UserError, match=field):
        registry.create("polyarith", {k: str(v) for k, v in overrides.items()})


def test_registry_and_bad_split():
    assert registry.get("polyarith") is PolyArith
    assert PolyArith.objective == "accuracy/in_domain" and PolyArith.direction == "maximize"
    assert PolyArith.in_domain == tuple(f"accuracy/ops={m}" for m in range(1, 6))
    assert PolyArith.ood == tuple(f"accuracy/ops={m}" for m in range(6, 11))
    task = registry.create("polyarith", {"test_per_op": "3"})
    assert task.config.test_per_op == 3
    assert PolyArith.splits == ("train", "valid", "test")
    with pytest.raises(UserError, match="dev"):
        task.build("dev", 0)


def test_loss_mask_marks_exactly_the_answers(tmp_path):
    """The dataset's mask scores the 5 answer digits and the newline of every example, nothing else."""
    from lab.data import prepare

    task = task_with(train_examples=50, test_per_op=1)
    ds = prepare(task, 0, root=tmp_path, quiet=True)
    tokens, mask = list(ds.train_tokens), list(ds.train_mask)
    text_scored = "".join(ds.enc.decode([t]) for t, m in zip(tokens, mask) if m)
    answers = "".join(r["answer"] + "\n" for r in task.build("train", 0))
    assert text_scored == answers
    all_task = task_with(train_examples=50, test_per_op=1, loss_on="all")
    assert prepare(all_task, 0, root=tmp_path, quiet=True).train_mask is None
