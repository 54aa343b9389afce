"""Tests of polyarith's knobs (modulus p, length k, operator set ops) and its validation split.

The arithmetic of every sampled ring and operator set is checked against an
independent sympy computation; train, validation and test never share a
prompt; every bad setting is one UserError line (and exit status 2 from the CLI).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import sympy
import torch

import generators.polyarith as polyarith
from generators import registry
from generators.polyarith import (MAX_K, OPS, PolyArith, PolyArithConfig, count_expressions, evaluate_tree,
                                   random_example)
from generators.polyring import PRIMES, mul_reference, ring
from lab.cli import main
from lab.config import build_run_config
from lab.errors import UserError
from lab.fields import build_dataclass

X = sympy.Symbol("X")
ROOT = Path(__file__).resolve().parents[1]
OP_SETS = [ops for r in range(1, 5) for ops in itertools.combinations(OPS, r)]  # all 15 non-empty subsets


def task_with(**overrides) -> PolyArith:
    return PolyArith(PolyArithConfig(**overrides))


# ---------------------------------------------------------------------------
# An independent oracle: sympy polynomials over GF(p), reduced mod X^k after each op
# ---------------------------------------------------------------------------

def sympy_value(tree: dict, p: int, k: int) -> sympy.Poly:
    if "poly" in tree:
        return sympy.Poly(sum(c * X ** i for i, c in enumerate(tree["poly"])), X, modulus=p)
    args = [sympy_value(t, p, k) for t in tree["args"]]
    op = tree["op"]
    if op == "neg":
        value = -args[0]
    elif op == "add":
        value = args[0] + args[1]
    elif op == "mul":
        value = args[0] * args[1]
    else:
        value = args[0].compose(args[1])  # p.compose(q) = p(q(X))
    return value.rem(sympy.Poly(X ** k, X, modulus=p))


def sympy_coeffs(poly: sympy.Poly, p: int, k: int) -> list[int]:
    # sympy's GF(p) uses symmetric representatives: map back to 0..p-1
    return [int(poly.coeff_monomial(X ** i)) % p for i in range(k)]


def parse(text: str, k: int) -> dict:
    """Recursive-descent parser of the prompt grammar with k-digit polynomials."""
    pos = 0

    def term() -> dict:
        nonlocal pos
        ch = text[pos]
        if ch == "-":
            pos += 1
            return {"op": "neg", "args": [term()]}
        if ch == "(":
            pos += 1
            left = term()
            op = {"+": "add", "*": "mul", "@": "compose"}[text[pos]]
            pos += 1
            right = term()
            assert text[pos] == ")", (text, pos)
            pos += 1
            return {"op": op, "args": [left, right]}
        digits = text[pos:pos + k]
        assert len(digits) == k and digits.isdigit(), (text, pos)
        pos += k
        return {"poly": [int(d) for d in digits]}

    tree = term()
    assert text[pos:] == "=", text
    return tree


def ops_of(tree: dict) -> list[str]:
    return [] if "poly" in tree else [tree["op"]] + [o for t in tree["args"] for o in ops_of(t)]


def leaves_of(tree: dict) -> list[list[int]]:
    return [tree["poly"]] if "poly" in tree else [c for t in tree["args"] for c in leaves_of(t)]


# Fixed edge cases (k = 1, single operators, a long k), then combinations sampled with a fixed seed.
_FIXED = [(2, 1, ("neg",)), (2, 1, ("compose",)), (3, 2, ("mul",)), (5, 3, ("add",)), (7, 8, OPS),
          (2, 6, ("mul", "compose")), (3, 4, ("neg", "compose")), (7, 5, OPS)]
_rng = random.Random("polyarith-knobs")
COMBOS = _FIXED + [(_rng.choice(PRIMES), _rng.randint(1, 7), _rng.choice(OP_SETS)) for _ in range(10)]


@pytest.mark.parametrize("p, k, ops", COMBOS, ids=[f"p{p}-k{k}-{'+'.join(o)}" for p, k, o in COMBOS])
def test_sympy_oracle_over_rings_and_operator_sets(p, k, ops):
    """For m = 1..8, 15 random expressions each: zero mismatches with sympy, and the prompt is right."""
    seen_ops = set()
    for m in range(1, 9):
        for j in range(15):
            rec = random_example(f"oracle/{p}/{k}/{ops}/{m}/{j}", m, p, k, ops)
            expected = sympy_coeffs(sympy_value(rec["expr"], p, k), p, k)
            assert rec["result"] == expected and rec["answer"] == "".join(map(str, expected)), rec
            assert list(evaluate_tree(rec["expr"], p)) == expected
            assert parse(rec["prompt"], k) == rec["expr"] and len(ops_of(rec["expr"])) == m == rec["ops"]
            assert all(len(c) == k and all(0 <= d < p for d in c) for c in leaves_of(rec["expr"]))
            seen_ops.update(ops_of(rec["expr"]))
    assert seen_ops == set(ops)  # only the allowed operators, and each of them


def test_oracle_through_the_task_for_a_small_ring():
    task = task_with(p=3, k=3, ops="add,compose", train_examples=200, train_max_ops=3, test_max_ops=6,
                     test_per_op=15, valid_per_op=10)
    for split in ("train", "valid", "test"):
        for rec in task.build(split, 1):
            assert rec["result"] == sympy_coeffs(sympy_value(rec["expr"], 3, 3), 3, 3)
            assert set(ops_of(rec["expr"])) <= {"add", "compose"} and parse(rec["prompt"], 3) == rec["expr"]


def test_unrolled_product_equals_its_definition():
    rng = random.Random(0)
    for p in PRIMES:
        for k in range(1, 13):
            r = ring(p, k)
            for _ in range(20):
                a = tuple(rng.randrange(p) for _ in range(k))
                b = tuple(rng.randrange(p) for _ in range(k))
                assert r.mul(a, b) == mul_reference(p, a, b)
    assert ring(2, 3).compose((0, 0, 1), (1, 1, 0)) == (1, 0, 1)  # (1 + X)^2 = 1 + X^2 over F2


def test_every_operator_set_fills_every_m():
    for ops in OP_SETS:
        for m in (1, 2, 5, 12):
            rec = random_example(f"fill/{ops}/{m}", m, 5, 2, ops)
            assert len(ops_of(rec["expr"])) == m and set(ops_of(rec["expr"])) <= set(ops)
        assert count_expressions(25, ops, 12) >= 25


def all_prompts(p: int, k: int, ops: tuple[str, ...], m: int) -> list[str]:
    """Every expression with m operations, by brute force (texts, without '=')."""
    if m == 0:
        return ["".join(map(str, c)) for c in itertools.product(range(p), repeat=k)]
    out = ["-" + t for t in all_prompts(p, k, ops, m - 1)] if "neg" in ops else []
    for op in ops:
        if op != "neg":
            for a in range(m):
                out += [f"({x}{polyarith.SYMBOL[op]}{y})" for x in all_prompts(p, k, ops, a)
                        for y in all_prompts(p, k, ops, m - 1 - a)]
    return out


def test_count_expressions_matches_brute_force():
    for ops in OP_SETS:
        for p, k, m in ((2, 1, 3), (3, 1, 2), (2, 2, 2)):
            prompts = all_prompts(p, k, ops, m)
            assert len(set(prompts)) == len(prompts) == count_expressions(p ** k, ops, m)  # unambiguous grammar
            assert count_expressions(p ** k, ops, m, cap=10) == min(10, len(prompts))


# ---------------------------------------------------------------------------
# Defaults are the paper's and unchanged
# ---------------------------------------------------------------------------

def test_defaults_are_the_papers_and_reproduce_the_two_split_data():
    c = PolyArithConfig()
    assert (c.p, c.k, c.ops, c.valid_per_op) == (7, 5, ("neg", "add", "mul", "compose"), 100)
    assert (c.train_min_ops, c.train_max_ops, c.test_min_ops, c.test_max_ops) == (1, 5, 1, 10)
    task = PolyArith(c)
    test = task.build("test", 0)
    # the test split of the version before the knobs, byte for byte
    assert hashlib.sha256(json.dumps(test).encode()).hexdigest() == \
        "5531f265c13684b2832ebdb65c9dfaf006a6ca3ddf1b023895956bb9ba86c8e0"
    raw = "".join(task.draw("train", 0, i)["prompt"] for i in range(2000))  # train draws before exclusion, too
    assert hashlib.sha256(raw.encode()).hexdigest()[:16] == "bdea5aa69805411b"


# ---------------------------------------------------------------------------
# The validation split: format, exclusion, determinism
# ---------------------------------------------------------------------------

def test_valid_records_have_the_test_format():
    task = task_with(train_examples=20, test_per_op=4, valid_per_op=3)
    valid, test = task.build("valid", 0), task.build("test", 0)
    assert len(valid) == 30 and [r["ops"] for r in valid] == [m for m in range(1, 11) for _ in range(3)]
    for rec in valid:
        assert set(rec) == set(test[0]) == {"prompt", "answer", "result", "ops", "expr"}
        assert json.loads(json.dumps(rec)) == rec and list(evaluate_tree(rec["expr"])) == rec["result"]
        assert parse(rec["prompt"], 5) == rec["expr"] and rec["answer"] == "".join(map(str, rec["result"]))


def test_splits_never_share_a_prompt_with_the_defaults():
    task = task_with(train_examples=20_000)
    test, valid = task.test_prompts(0), task.valid_prompts(0)
    assert len(task.build("valid", 0)) == 1000 and test.isdisjoint(valid)
    train = task.build("train", 0)
    assert not any(r["prompt"] in test or r["prompt"] in valid for r in train)


def test_splits_never_share_a_prompt_in_a_small_ring_where_draws_collide():
    # p = 2, k = 2, neg and add: only 20 prompts with m = 1 and 120 with m = 2
    task = task_with(p=2, k=2, ops="neg,add", train_examples=400, train_max_ops=2, test_max_ops=3,
                     test_per_op=8, valid_per_op=5)
    test, valid = task.build("test", 0), task.build("valid", 0)
    test_prompts, valid_prompts = {r["prompt"] for r in test}, {r["prompt"] for r in valid}
    assert test_prompts.isdisjoint(valid_prompts)
    raw_valid = [task.draw("valid", 0, i) for i in range(len(valid))]
    redrawn = [i for i, r in enumerate(raw_valid) if r["prompt"] in test_prompts]
    assert redrawn  # without exclusion, validation would contain test prompts
    assert all(valid[i] == raw_valid[i] for i in range(len(valid)) if i not in redrawn)
    train = task.build("train", 0)
    raw_train = [task.draw("train", 0, i) for i in range(400)]
    hits = [i for i, r in enumerate(raw_train) if r["prompt"] in test_prompts | valid_prompts]
    assert len(hits) > 20 and any(raw_train[i]["prompt"] in valid_prompts - test_prompts for i in hits)
    assert not any(r["prompt"] in test_prompts or r["prompt"] in valid_prompts for r in train)
    for i in hits[:10] + redrawn[:5]:
        assert task.example("train", 0, i) == train[i]
    for i in redrawn[:5]:
        assert task.example("valid", 0, i) == valid[i] != raw_valid[i]


def test_valid_split_is_deterministic():
    task = task_with(train_examples=50, test_per_op=10, valid_per_op=6)
    valid = task.build("valid", 5)
    fresh = task_with(train_examples=50, test_per_op=10, valid_per_op=6)
    assert fresh.build("valid", 5) == valid
    for i in (0, 5, 6, 31, 59):
        assert task_with(train_examples=50, test_per_op=10, valid_per_op=6).example("valid", 5, i) == valid[i]
    assert task.build("valid", 6) != valid
    assert {r["prompt"] for r in valid}.isdisjoint({r["prompt"] for r in task.build("test", 5)})
    # validation examples depend on (seed, m, j) and the test set: more per m appends, other train settings don't matter
    bigger = task_with(train_examples=7, train_max_ops=4, test_per_op=10, valid_per_op=9).build("valid", 5)
    for m in range(1, 11):
        assert [r for r in bigger if r["ops"] == m][:6] == [r for r in valid if r["ops"] == m]
    with pytest.raises(IndexError):
        task.example("valid", 5, 60)


def test_valid_per_op_zero_drops_the_split():
    task = task_with(train_examples=300, test_per_op=5, valid_per_op=0)
    assert task.splits == ("train", "test") and PolyArith.splits == ("train", "valid", "test")
    with pytest.raises(UserError, match="not 'valid'"):
        task.build("valid", 0)
    assert task.valid_prompts(0) == frozenset()
    test_prompts = task.test_prompts(0)  # train avoids test prompts only, as before the split existed
    assert all(r == task.draw("train", 0, i) or task.draw("train", 0, i)["prompt"] in test_prompts
               for i, r in enumerate(task.build("train", 0)))


class AnswerModel(torch.nn.Module):
    """Answers every prompt of ``records`` correctly, via ``generate``."""

    def __init__(self, enc, records: list[dict], k: int):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.enc, self.k = enc, k
        self.answers = {r["prompt"]: r["answer"] for r in records}

    def generate(self, idx, max_new_tokens, stop_token=None):
        assert max_new_tokens == self.k + 1
        return torch.tensor([self.enc.encode(self.answers[self.enc.decode(row[1:])] + "\n") for row in idx.tolist()])


def test_evaluate_scores_valid_like_test_in_a_small_ring():
    from lab.tokenizers import byte_encoding

    enc = byte_encoding()
    task = task_with(p=5, k=3, test_max_ops=6, test_per_op=3, valid_per_op=2)
    valid, test = task.build("valid", 0), task.build("test", 0)
    on_valid = task.evaluate(AnswerModel(enc, valid, 3), valid, enc, "cpu")
    on_test = task.evaluate(AnswerModel(enc, test, 3), test, enc, "cpu")
    assert set(on_valid) == set(on_test) and all(v == 1.0 for v in on_valid.values())
    assert on_valid["digit_accuracy/all"] == 1.0 and "accuracy/ops=6" in on_valid


# ---------------------------------------------------------------------------
# Config: coercion from the command line, and one-line errors for bad input
# ---------------------------------------------------------------------------

def test_ops_from_the_command_line():
    assert build_run_config(registry.get("polyarith"), {"task.ops": "neg,add"}).task.ops == ("neg", "add")
    assert build_run_config(registry.get("polyarith"), {"task.ops": "compose, mul"}).task.ops == ("mul", "compose")
    cfg = build_run_config(registry.get("polyarith"), {"task.p": "3", "task.k": "4", "task.ops": "mul"}).task
    assert (cfg.p, cfg.k, cfg.ops) == (3, 4, ("mul",))
    # config.json stores ops as a JSON list; reading it back gives the same config
    stored = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert stored["ops"] == ["mul"] and build_dataclass(PolyArithConfig, stored, where="task") == cfg


BAD = [
    ({"p": 4}, "polyarith.p must be a one-digit prime"),
    ({"p": 9}, "polyarith.p"),
    ({"p": 11}, "polyarith.p"),
    ({"p": 1}, "polyarith.p"),
    ({"p": 0}, "polyarith.p"),
    ({"k": 0}, "polyarith.k must be a positive integer"),
    ({"k": -2}, "polyarith.k"),
    ({"k": MAX_K + 1}, "polyarith.k must be at most"),
    ({"ops": ""}, "polyarith.ops is empty"),
    ({"ops": ()}, "polyarith.ops is empty"),
    ({"ops": "neg,sub"}, "unknown operator 'sub'"),
    ({"ops": ("neg", "neg")}, "names 'neg' twice"),
    ({"ops": ("neg", 3)}, "polyarith.ops must be operator names"),
    ({"valid_per_op": -1}, "polyarith.valid_per_op"),
    ({"p": 2, "k": 1, "ops": "neg"}, "only 2 distinct prompts have m=1"),  # any m: -0, -1, --0, ...
    ({"p": 2, "k": 1, "test_per_op": 10, "valid_per_op": 4}, "only 14 distinct prompts have m=1"),
]


@pytest.mark.parametrize("overrides, needle", BAD)
def test_bad_knobs_raise_one_line_user_error(overrides, needle):
    with pytest.raises(UserError, match=needle) as info:
        PolyArithConfig(**overrides)
    assert "\n" not in str(info.value)
    cli = {f"task.{key}": ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
           for key, value in overrides.items()}
    if cli.get("task.ops") != "neg,3":  # a CLI string is always a name: 'neg,3' reads as an unknown operator
        with pytest.raises(UserError, match=needle.replace("(", r"\(")):
            build_run_config(registry.get("polyarith"), cli)


def test_small_ring_with_just_enough_prompts_builds():
    # 14 prompts with m = 1 (2 negations, 3 x 4 binary), 13 held out
    task = task_with(p=2, k=1, train_examples=100, train_max_ops=2, test_max_ops=3, test_per_op=9, valid_per_op=4)
    held_out = task.test_prompts(0) | task.valid_prompts(0)
    assert not any(r["prompt"] in held_out for r in task.build("train", 0))


def test_exhausted_prompts_raise_instead_of_looping(monkeypatch):
    monkeypatch.setattr(polyarith, "MAX_ATTEMPTS", 2)
    task = task_with(p=2, k=1, ops="neg,add", train_examples=300, train_max_ops=1, test_max_ops=2,
                     test_per_op=3, valid_per_op=2)
    with pytest.raises(UserError, match="times in a row"):
        task.build("train", 0)


@pytest.mark.parametrize("setting, needle", [
    ("task.p=4", "polyarith.p must be a one-digit prime"),
    ("task.ops=neg,pow", "unknown operator 'pow'"),
    ("task.ops=", "polyarith.ops is empty"),
    ("task.k=0", "polyarith.k"),
])
def test_cli_bad_knob_one_line_exit_2(capsys, setting, needle):
    assert main(["generate", "polyarith", "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_python_m_lab_generate_bad_modulus_exits_2():
    proc = subprocess.run([sys.executable, "-m", "lab", "generate", "polyarith", "--set", "task.p=4"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "polyarith.p" in proc.stderr, proc.stderr


def test_cli_generates_the_valid_split_of_a_small_ring(tmp_path):
    out = tmp_path / "valid.jsonl"
    argv = ["generate", "polyarith", "--split", "valid", "--set", "task.train_examples=50", "--set", "task.p=3",
            "--set", "task.k=2", "--set", "task.ops=mul,neg", "--set", "task.test_per_op=4",
            "--set", "task.valid_per_op=3", "--out", str(out)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 30 and all(len(r["answer"]) == 2 and list(evaluate_tree(r["expr"], 3)) == r["result"]
                                   for r in rows)
