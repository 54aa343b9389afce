"""Polynomial arithmetic in F7[X]/(X^5) (Gloeckle et al. 2024, section 4.2).

The model reads an expression over polynomials and writes the coefficients of
its value. Difficulty is ``m``, the number of operations in the expression;
training uses small ``m`` (in-domain) and the test set also has larger ``m``
(out-of-domain).

**The ring.** Elements are polynomials of degree < 5 with coefficients in
F7 = {0..6}, stored as their 5 coefficients ``[c0, c1, c2, c3, c4]`` (``ci``
is the coefficient of X^i). This list is the canonical representative of a
class of F7[X]/(X^5). The four operations are

* ``neg``: ``-p``, coefficient-wise mod 7;
* ``add``: ``p + q``, coefficient-wise mod 7;
* ``mul``: ``p * q`` with the terms of degree >= 5 dropped (product mod X^5);
* ``compose``: ``p @ q = p(q(X)) mod X^5``: substitute the polynomial ``q``
  for ``X`` in ``p``, expand, reduce coefficients mod 7 and drop the terms of
  degree >= 5.

*Why compose is well defined.* Reduction mod X^5, ``F7[X] -> F7[X]/(X^5)``,
is a ring homomorphism, and substituting any element ``q`` of a commutative
ring for ``X`` in a polynomial ``p`` (the evaluation map ``p -> p(q)``) is a
ring homomorphism too. Hence ``p(q) mod X^5`` depends only on ``q mod X^5``:
if ``q' = q + X^5 s`` then every power ``q'^k`` equals ``q^k`` mod X^5, so
``sum ck q'^k = sum ck q^k`` mod X^5. It also means the result can be computed
entirely inside the ring (Horner's rule with truncated products, as
:func:`compose` does), giving the same answer as expanding in F7[X] and
truncating at the end. The substitution is *formal*: ``q`` may have a
nonzero constant term (``q(0) != 0`` is allowed; e.g. ``X^2 @ (1 + X) =
1 + 2X + X^2``). Because ``p`` has degree < 5, ``p(q)`` is a finite sum and
nothing needs ``q(0) = 0`` to converge. One subtlety: the result depends on
``p`` through its canonical (degree < 5) representative. When ``q(0) != 0``,
another representative ``p + X^5 s`` of the same class would give a different
value (``X^5 @ 1 = 1`` although ``X^5 = 0`` in the ring), so compose is a map
on coefficient lists, well defined in ``q``'s class, exactly as the task
uses it.

**Expression distribution.** ``gen(m)`` draws an expression with exactly
``m`` operation nodes:

* ``gen(0)`` is a leaf: 5 coefficients, independent and uniform on 0..6;
* ``gen(m)`` for m >= 1 draws the operation uniformly from the four; ``neg``
  gets one child ``gen(m-1)``; a binary operation splits the remaining
  ``m-1`` operations as ``a + b`` with ``a`` uniform on 0..m-1 and gets
  children ``gen(a)`` (left) and ``gen(b)`` (right).

Random draws happen in that order (operation, split, whole left subtree,
whole right subtree). Training examples draw ``m`` uniformly in
``train_min_ops..train_max_ops`` first; the test set has ``test_per_op``
examples for each ``m`` in ``test_min_ops..test_max_ops``.

**Serialization.** Character level, with the byte tokenizer (one character =
one token). A polynomial is its 5 digits ``c0..c4`` written together:
``30162`` is ``3 + X^2 + 6X^3 + 2X^4``. Operations are infix and fully
parenthesised: ``(A+B)``, ``(A*B)``, ``(A@B)`` (meaning ``A(B(X))``);
negation is a prefix minus with no parentheses of its own, ``-A`` (its child
is a leaf, a parenthesised binary operation, or another negation: ``--A``).
The grammar is unambiguous: a minus applies to exactly the one term after it.
The prompt is ``expression + "="``, the answer the 5 result digits, and the
training document of an example is ``prompt + answer + "\\n"`` (the newline
ends an example; the trainer packs documents back to back, each preceded by the
end-of-text token). For evaluation the model is prompted with the end-of-text
token followed by ``prompt`` (the example boundary it saw in training) and decodes greedily up to 6 tokens, stopping at ``"\\n"``; an
example is correct when the text before the ``"\\n"`` is exactly the answer.

**Determinism and train/test exclusion.** Every example has its own
``random.Random`` seeded with a string naming it (CPython seeds from strings
via SHA-512, independent of ``PYTHONHASHSEED``):

* test example ``j`` of difficulty ``m``: ``"polyarith/test/{seed}/{m}/{j}"``,
  so test examples do not depend on the other test settings, and raising
  ``test_per_op`` only appends examples;
* train example ``i``, attempt ``a``: ``"polyarith/train/{seed}/{i}/{a}"``.

No test prompt ever appears in the train split: train example ``i`` takes the
first attempt ``a = 0, 1, 2, ...`` whose prompt is not a test prompt (of the
same seed and config). Collisions are real (with m = 1 a ``neg`` expression
has only 7^5 possible prompts). :meth:`PolyArith.example` applies the same
rule, so ``build(split, seed)[i] == example(split, seed, i)`` exactly;
:meth:`PolyArith.draw` gives the example before exclusion. Duplicates within
the train split, or within the test split, are not removed (i.i.d. draws).

Example:
    >>> task = PolyArith(PolyArithConfig(train_examples=3, test_per_op=2))
    >>> rec = task.example("test", 0, 0)
    >>> rec["ops"], rec["prompt"].endswith("="), len(rec["answer"])
    (1, True, 5)
    >>> task.document({"prompt": "(10000+20000)=", "answer": "30000"})
    '(10000+20000)=30000\\n'
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, fields

from generators.registry import Task, register
from lab.errors import UserError

P = 7  # the coefficient field F_P
N = 5  # polynomials are taken mod X^N: N coefficients
N_POLYS = P ** N  # 16807 elements in the ring
MAX_OPS = 256  # generation recurses once per operation; keeps far from Python's recursion limit
MAX_ATTEMPTS = 1000  # train resampling gives up (UserError) after this many test collisions in a row

OPS = ("neg", "add", "mul", "compose")
SYMBOL = {"add": "+", "mul": "*", "compose": "@"}


# ---------------------------------------------------------------------------
# Ring operations on 5-tuples of ints in 0..6
# ---------------------------------------------------------------------------

def neg(p: tuple) -> tuple:
    """-p, coefficient-wise mod 7.

    Example:
        >>> neg((1, 0, 6, 0, 3))
        (6, 0, 1, 0, 4)
    """
    return tuple((-c) % P for c in p)


def add(p: tuple, q: tuple) -> tuple:
    """p + q, coefficient-wise mod 7.

    Example:
        >>> add((3, 4, 0, 0, 6), (5, 3, 1, 0, 1))
        (1, 0, 1, 0, 0)
    """
    return tuple((a + b) % P for a, b in zip(p, q))


def mul(p: tuple, q: tuple) -> tuple:
    """p * q mod X^5: the product with terms of degree >= 5 dropped.

    Coefficient k is the sum of p[i] * q[k - i] over i <= k (written out for
    speed: this is the inner loop of the generator).

    Example:
        >>> mul((1, 1, 0, 0, 0), (1, 1, 0, 0, 0))      # (1 + X)^2 = 1 + 2X + X^2
        (1, 2, 1, 0, 0)
        >>> mul((0, 0, 1, 0, 0), (0, 0, 0, 1, 0))      # X^2 * X^3 = X^5 = 0
        (0, 0, 0, 0, 0)
    """
    p0, p1, p2, p3, p4 = p
    q0, q1, q2, q3, q4 = q
    return (
        p0 * q0 % P,
        (p0 * q1 + p1 * q0) % P,
        (p0 * q2 + p1 * q1 + p2 * q0) % P,
        (p0 * q3 + p1 * q2 + p2 * q1 + p3 * q0) % P,
        (p0 * q4 + p1 * q3 + p2 * q2 + p3 * q1 + p4 * q0) % P,
    )


def compose(p: tuple, q: tuple) -> tuple:
    """p(q(X)) mod X^5 (formal substitution; q may have a constant term).

    Horner's rule, ``c0 + q*(c1 + q*(c2 + q*(c3 + q*c4)))``, with truncated
    products; equal to expanding in F7[X] and truncating (see module docstring).

    Example:
        >>> compose((0, 0, 1, 0, 0), (1, 1, 0, 0, 0))  # X^2 @ (1 + X) = 1 + 2X + X^2
        (1, 2, 1, 0, 0)
        >>> compose((2, 0, 0, 0, 0), (5, 5, 5, 5, 5))  # a constant ignores q
        (2, 0, 0, 0, 0)
    """
    result = (p[4], 0, 0, 0, 0)
    for c in (p[3], p[2], p[1], p[0]):
        r = mul(result, q)
        result = ((r[0] + c) % P, r[1], r[2], r[3], r[4])
    return result


APPLY = {"add": add, "mul": mul, "compose": compose}

# Leaf k (0 <= k < 7^5) is the polynomial whose coefficients are the base-7
# digits of k, lowest first: one randrange per leaf draws all 5 coefficients
# independently and uniformly.
_LEAF = [tuple((k // P ** i) % P for i in range(N)) for k in range(N_POLYS)]
_LEAF_TEXT = ["".join(map(str, p)) for p in _LEAF]


# ---------------------------------------------------------------------------
# Expressions: generation, evaluation, text
# ---------------------------------------------------------------------------

def _gen(rng: random.Random, m: int) -> tuple[dict, tuple, str]:
    """A random expression with m operations: (tree, value, text), built together."""
    if m == 0:
        k = rng.randrange(N_POLYS)
        return {"poly": list(_LEAF[k])}, _LEAF[k], _LEAF_TEXT[k]
    op = OPS[rng.randrange(4)]
    if op == "neg":
        tree, value, text = _gen(rng, m - 1)
        return {"op": "neg", "args": [tree]}, neg(value), "-" + text
    a = rng.randrange(m)  # operations in the left subtree; the right gets m-1-a
    lt, lv, ls = _gen(rng, a)
    rt, rv, rs = _gen(rng, m - 1 - a)
    return {"op": op, "args": [lt, rt]}, APPLY[op](lv, rv), f"({ls}{SYMBOL[op]}{rs})"


def evaluate_tree(tree: dict) -> tuple:
    """The value of an expression tree (as stored in a record's ``expr``).

    Example:
        >>> evaluate_tree({"op": "neg", "args": [{"poly": [1, 2, 0, 0, 0]}]})
        (6, 5, 0, 0, 0)
    """
    if "poly" in tree:
        return tuple(tree["poly"])
    values = [evaluate_tree(t) for t in tree["args"]]
    return neg(*values) if tree["op"] == "neg" else APPLY[tree["op"]](*values)


def expression_text(tree: dict) -> str:
    """The serialized expression of a tree (without the trailing ``=``).

    Example:
        >>> leaf = {"poly": [3, 0, 1, 6, 2]}
        >>> expression_text({"op": "neg", "args": [{"op": "compose", "args": [leaf, leaf]}]})
        '-(30162@30162)'
    """
    if "poly" in tree:
        return "".join(map(str, tree["poly"]))
    args = [expression_text(t) for t in tree["args"]]
    return "-" + args[0] if tree["op"] == "neg" else f"({args[0]}{SYMBOL[tree['op']]}{args[1]})"


def random_example(key: str, m: int) -> dict:
    """The record drawn from ``random.Random(key)`` with m operations.

    Example:
        >>> rec = random_example("demo", 2)
        >>> rec == random_example("demo", 2), rec["ops"], sorted(rec)
        (True, 2, ['answer', 'expr', 'ops', 'prompt', 'result'])
    """
    return _record(random.Random(key), m)


def _record(rng: random.Random, m: int) -> dict:
    """Draw an expression with m operations from ``rng`` and package it as a record."""
    tree, value, text = _gen(rng, m)
    return {"prompt": text + "=", "answer": "".join(map(str, value)), "result": list(value), "ops": m, "expr": tree}


def is_correct(decoded: str, answer: str) -> bool:
    """Exact match: the decoded text up to its first newline equals the answer.

    Example:
        >>> is_correct("30162\\n", "30162"), is_correct("301620", "30162"), is_correct("3016", "30162")
        (True, False, False)
    """
    return decoded.split("\n", 1)[0] == answer


# ---------------------------------------------------------------------------
# Config and task
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PolyArithConfig:
    """Sizes and difficulty ranges of the polyarith task.

    Example:
        >>> PolyArithConfig(test_per_op=10).test_max_ops
        10
    """

    train_examples: int = 200_000  # training examples (i.i.d. draws; test prompts excluded)
    train_min_ops: int = 1  # training m is uniform in train_min_ops..train_max_ops (in-domain)
    train_max_ops: int = 5  # paper: 5; test m above this is out-of-domain
    test_min_ops: int = 1  # test set covers m = test_min_ops..test_max_ops
    test_max_ops: int = 10  # paper: 10
    test_per_op: int = 500  # test examples per m; the paper uses 2000, 500 is a smaller CPU default
    loss_on: str = "answer"  # "answer": loss on the answer tokens only; "all": on every token (paper: not stated)

    def __post_init__(self):
        if self.loss_on not in ("answer", "all"):
            raise UserError(f"polyarith.loss_on must be 'answer' or 'all', got '{self.loss_on}'")
        for f in fields(self):
            if f.name == "loss_on":
                continue
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"polyarith.{f.name} must be a positive integer, got {value!r}")
        for name in ("train_max_ops", "test_max_ops"):
            if getattr(self, name) > MAX_OPS:
                raise UserError(f"polyarith.{name} must be at most {MAX_OPS}, got {getattr(self, name)}")
        if self.train_min_ops > self.train_max_ops:
            raise UserError(f"polyarith.train_min_ops ({self.train_min_ops}) must be <= train_max_ops ({self.train_max_ops})")
        if self.test_min_ops > self.test_max_ops:
            raise UserError(f"polyarith.test_min_ops ({self.test_min_ops}) must be <= test_max_ops ({self.test_max_ops})")
        if self.test_min_ops > self.train_max_ops or self.test_max_ops < self.train_min_ops:
            raise UserError(f"polyarith.test_min_ops..test_max_ops ({self.test_min_ops}..{self.test_max_ops}) must overlap "
                            f"the training range {self.train_min_ops}..{self.train_max_ops} (else there is no in-domain metric)")


def _metric(m: int) -> str:
    return f"accuracy/ops={m}"


_DEFAULT = PolyArithConfig()


@register
class PolyArith(Task):
    """Evaluate expressions over F7[X]/(X^5); accuracy per number of operations.

    ``in_domain``/``ood`` on the class describe the default config; an
    instance sets its own from its config.

    Example:
        >>> task = PolyArith(PolyArithConfig(train_examples=4, test_per_op=3))
        >>> [r["ops"] for r in task.build("test", 0)][:4]
        [1, 1, 1, 2]
        >>> len(task.build("train", 0)), task.ood[0]
        (4, 'accuracy/ops=6')
    """

    name = "polyarith"
    Config = PolyArithConfig
    objective = "accuracy/in_domain"
    direction = "maximize"
    in_domain = tuple(_metric(m) for m in range(_DEFAULT.train_min_ops, _DEFAULT.train_max_ops + 1))
    ood = tuple(_metric(m) for m in range(_DEFAULT.train_max_ops + 1, _DEFAULT.test_max_ops + 1))
    description = "polynomial arithmetic in F7[X]/(X^5): neg, add, mul, compose; accuracy by number of ops (Gloeckle et al. 4.2)"

    def __init__(self, config: PolyArithConfig):
        super().__init__(config)
        c = config
        self.in_domain = tuple(_metric(m) for m in range(max(c.train_min_ops, c.test_min_ops), min(c.train_max_ops, c.test_max_ops) + 1))
        self.ood = tuple(_metric(m) for m in range(c.train_max_ops + 1, c.test_max_ops + 1))
        self._test_prompts: dict[int, frozenset[str]] = {}  # seed -> prompts of the test split

    # -- examples --------------------------------------------------------

    def _size(self, split: str) -> int:
        c = self.config
        if split == "train":
            return c.train_examples
        if split == "test":
            return (c.test_max_ops - c.test_min_ops + 1) * c.test_per_op
        raise UserError(f"polyarith has splits 'train' and 'test', not '{split}'")

    def draw(self, split: str, seed: int, index: int, attempt: int = 0) -> dict:
        """Example ``index`` of ``split`` *before* train/test exclusion.

        Test example ``index`` has ``m = test_min_ops + index // test_per_op``
        (the test split is sorted by m); a train example draws its m first.
        ``attempt`` numbers the redraws of a train example (ignored for test).

        Example:
            >>> task = PolyArith(PolyArithConfig(test_per_op=2))
            >>> task.draw("test", 0, 2)["ops"], task.draw("train", 0, 0) == task.draw("train", 0, 0, attempt=0)
            (2, True)
        """
        size = self._size(split)
        if not 0 <= index < size:
            raise IndexError(f"polyarith {split} index {index} out of range 0..{size - 1}")
        c = self.config
        if split == "test":
            m, j = c.test_min_ops + index // c.test_per_op, index % c.test_per_op
            return random_example(f"polyarith/test/{seed}/{m}/{j}", m)
        rng = random.Random(f"polyarith/train/{seed}/{index}/{attempt}")
        return _record(rng, rng.randint(c.train_min_ops, c.train_max_ops))

    def test_prompts(self, seed: int) -> frozenset[str]:
        """The set of test prompts for ``seed`` (cached); train examples avoid them.

        Example:
            >>> task = PolyArith(PolyArithConfig(test_per_op=2))
            >>> len(task.test_prompts(0)) <= 20
            True
        """
        if seed not in self._test_prompts:
            self._test_prompts[seed] = frozenset(r["prompt"] for r in self.build("test", seed))
        return self._test_prompts[seed]

    def _train_example(self, seed: int, index: int, excluded: frozenset[str]) -> dict:
        """First attempt of train example ``index`` whose prompt is not a test prompt."""
        for attempt in range(MAX_ATTEMPTS):
            rec = self.draw("train", seed, index, attempt)
            if rec["prompt"] not in excluded:
                return rec
        raise UserError(f"polyarith: train example {index} hit a test prompt {MAX_ATTEMPTS} times in a row; "
                        "the test set covers (nearly) every training expression, use a larger train_min_ops")

    def example(self, split: str, seed: int, index: int) -> dict:
        """Example ``index`` of ``split``, exactly as ``build(split, seed)[index]``.

        Example:
            >>> task = PolyArith(PolyArithConfig(train_examples=5, test_per_op=2))
            >>> task.example("train", 7, 3) == task.build("train", 7)[3]
            True
        """
        if split == "test":
            return self.draw(split, seed, index)
        if not 0 <= index < self._size(split):
            raise IndexError(f"polyarith {split} index {index} out of range 0..{self._size(split) - 1}")
        return self._train_example(seed, index, self.test_prompts(seed))

    def build(self, split: str, seed: int) -> list[dict]:
        """All examples of ``split`` (``"train"`` or ``"test"``); test is sorted by m.

        Example:
            >>> task = PolyArith(PolyArithConfig(train_examples=2, test_per_op=1))
            >>> [r["ops"] for r in task.build("test", 0)]
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        """
        size = self._size(split)
        if split == "test":
            return [self.draw("test", seed, i) for i in range(size)]
        excluded = self.test_prompts(seed)
        return [self._train_example(seed, i, excluded) for i in range(size)]

    def document(self, record: dict) -> str:
        """Training text of a record: prompt + answer + newline.

        Example:
            >>> PolyArith(PolyArithConfig()).document({"prompt": "-10000=", "answer": "60000"})
            '-10000=60000\\n'
        """
        return record["prompt"] + record["answer"] + "\n"

    def context(self, record: dict) -> str:
        """The prompt is context only when ``loss_on`` is ``"answer"`` (the default).

        The expression's digits are uniformly random, so a loss on them is
        irreducible noise that drowns the answer's signal: with it, a 1M model
        stays at chance even on negation after ~1000 steps; with the loss on
        the answer only, it reaches 84% digit accuracy on negation by step 600.

        Example:
            >>> PolyArith(PolyArithConfig()).context({"prompt": "-10000=", "answer": "60000"})
            '-10000='
        """
        return record["prompt"] if self.config.loss_on == "answer" else ""

    # -- evaluation ------------------------------------------------------

    def evaluate(self, model, test: list[dict], enc, device, *, limit: int | None = None) -> dict[str, float]:
        """Greedy exact-match accuracy per m, in-domain, out-of-domain and overall.

        Also ``digit_accuracy/{in_domain,ood,all}``: the share of answer digits
        right in place (chance 1/7), a finer signal than exact match.

        Each prompt is the end-of-text token + ``prompt``; the model decodes up to 6 tokens with
        head 1 and stops at the newline. With ``limit``, only the first
        ``limit`` test examples of each m are scored.

        Example:
            >>> import torch
            >>> from lab.config import ModelConfig
            >>> from lab.model import MTPModel
            >>> from lab.tokenizers import byte_encoding
            >>> enc = byte_encoding()
            >>> task = PolyArith(PolyArithConfig(test_per_op=2))
            >>> model = MTPModel(ModelConfig(size="custom", d_model=32, layers=2, n_heads=2, vocab_size=enc.n_vocab).resolved())
            >>> metrics = task.evaluate(model, task.build("test", 0), enc, "cpu", limit=1)
            >>> sorted(metrics)[:3]
            ['accuracy/all', 'accuracy/in_domain', 'accuracy/ood']
        """
        from lab.decode import greedy_generate

        per_m: dict[int, list[dict]] = defaultdict(list)
        for rec in test:
            if limit is None or len(per_m[rec["ops"]]) < limit:
                per_m[rec["ops"]].append(rec)
        records = [rec for m in sorted(per_m) for rec in per_m[m]]
        if not records:
            return {}
        newline = enc.encode("\n")[0]
        prompts = [[enc.eot_token] + enc.encode(rec["prompt"]) for rec in records]
        outputs = greedy_generate(model, prompts, max_new_tokens=N + 1, stop_token=newline, device=device)
        hits: dict[int, list[bool]] = defaultdict(list)
        digits: dict[int, list[float]] = defaultdict(list)  # share of the N digits right, in place
        for rec, out in zip(records, outputs):
            text = enc.decode(out)
            hits[rec["ops"]].append(is_correct(text, rec["answer"]))
            digits[rec["ops"]].append(sum(a == b for a, b in zip(text[:N], rec["answer"])) / N)

        def mean(values) -> float:
            return sum(values) / len(values)

        c = self.config
        metrics = {_metric(m): mean(hits[m]) for m in sorted(hits)}
        # exact match (the paper's metric), then the per-digit accuracy (chance: 1/7), which shows
        # progress long before whole answers come out right
        for name, per_m in (("accuracy", hits), ("digit_accuracy", digits)):
            in_domain = [h for m in per_m if c.train_min_ops <= m <= c.train_max_ops for h in per_m[m]]
            ood = [h for m in per_m if m > c.train_max_ops for h in per_m[m]]
            if in_domain:
                metrics[f"{name}/in_domain"] = mean(in_domain)
            if ood:
                metrics[f"{name}/ood"] = mean(ood)
            metrics[f"{name}/all"] = mean([h for m in per_m for h in per_m[m]])
        return metrics

    def stats(self, examples: list[dict], enc) -> dict[str, float]:
        """Number of examples, mean tokens per document, examples per m.

        Example:
            >>> from lab.tokenizers import byte_encoding
            >>> task = PolyArith(PolyArithConfig())
            >>> task.stats([{"prompt": "-10000=", "answer": "60000", "ops": 1}], byte_encoding())
            {'examples': 1.0, 'tokens_per_document': 13.0, 'examples/ops=1': 1.0}
        """
        tokens = sum(len(enc.encode(self.document(r))) for r in examples)
        out = {"examples": float(len(examples)), "tokens_per_document": tokens / max(1, len(examples))}
        for m, count in sorted(Counter(r["ops"] for r in examples).items()):
            out[f"examples/ops={m}"] = float(count)
        return out
