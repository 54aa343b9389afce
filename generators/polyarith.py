"""Polynomial arithmetic in F_p[X]/(X^k) (Gloeckle et al. 2024, section 4.2).

The model reads an expression over polynomials and writes the coefficients of
its value. Difficulty is ``m``, the number of operations in the expression;
training uses small ``m`` (in-domain) and the test set also has larger ``m``
(out-of-domain).

**The ring and the knobs.** Elements are polynomials of degree < ``k`` with
coefficients in F_p = {0..p-1}, stored as their ``k`` coefficients
``[c0, ..., c_{k-1}]``. The paper's ring, and the default, is F7[X]/(X^5)
(``p = 7``, ``k = 5``). The operations are ``neg`` (``-a``), ``add``
(``a + b``), ``mul`` (``a * b`` mod X^k) and ``compose`` (``a @ b = a(b(X))
mod X^k``, a formal substitution: ``b`` may have a constant term), all with
coefficients mod p; :mod:`generators.polyring` implements them and explains
why compose is well defined. Three config fields set the difficulty besides
``m``:

* ``p``, the modulus: a prime with one digit (2, 3, 5 or 7), so that every
  coefficient is one character and one token;
* ``k``, the number of coefficients (the ring is F_p[X]/(X^k), k >= 1);
* ``ops``, the operator set: a non-empty subset of neg, add, mul, compose
  (from the command line ``--set task.ops=neg,add``). It is a set: the order
  given does not matter (it is stored in the order neg, add, mul, compose) and
  naming an operator twice is an error. *Every* non-empty set can build an
  expression with any number m >= 1 of operations (a chain of negations, or
  m nested binary operations over m + 1 leaves), so any operator set fills
  any m range.

**Expression distribution.** ``gen(m)`` draws an expression with exactly
``m`` operation nodes:

* ``gen(0)`` is a leaf: k coefficients, independent and uniform on 0..p-1
  (one ``randrange(p**k)``, whose base-p digits are the coefficients);
* ``gen(m)`` for m >= 1 draws the operation uniformly from ``ops``; ``neg``
  gets one child ``gen(m-1)``; a binary operation splits the remaining
  ``m-1`` operations as ``a + b`` with ``a`` uniform on 0..m-1 and gets
  children ``gen(a)`` (left) and ``gen(b)`` (right).

Random draws happen in that order (operation, split, whole left subtree,
whole right subtree). Training examples draw ``m`` uniformly in
``train_min_ops..train_max_ops`` first; the test set has ``test_per_op``
examples and the validation set ``valid_per_op`` examples for each ``m`` in
``test_min_ops..test_max_ops``.

**Serialization.** Character level, with the byte tokenizer (one character =
one token). A polynomial is its k digits ``c0..c_{k-1}`` written together:
with k = 5, ``30162`` is ``3 + X^2 + 6X^3 + 2X^4``. Operations are infix and
fully parenthesised: ``(A+B)``, ``(A*B)``, ``(A@B)`` (meaning ``A(B(X))``);
negation is a prefix minus with no parentheses of its own, ``-A`` (its child
is a leaf, a parenthesised binary operation, or another negation: ``--A``).
The grammar is unambiguous: a minus applies to exactly the one term after it,
so distinct expressions have distinct prompts. The prompt is
``expression + "="``, the answer the k result digits, and the training
document of an example is ``prompt + answer + "\\n"`` (the newline ends an
example; the trainer packs documents back to back, each preceded by the
end-of-text token). For evaluation the model is prompted with the end-of-text
token followed by ``prompt`` (the example boundary it saw in training) and
decodes greedily up to k + 1 tokens, stopping at ``"\\n"``; an example is
correct when the text before the ``"\\n"`` is exactly the answer.

**Splits, determinism and exclusion.** There are three splits, ``train``,
``valid`` and ``test``; valid and test records have the same format and
order (sorted by m) and are scored by the same :meth:`PolyArith.evaluate`.
Every example has its own ``random.Random`` seeded with a string naming it
(CPython seeds from strings via SHA-512, independent of ``PYTHONHASHSEED``):

* test example ``j`` of difficulty ``m``: ``"polyarith/test/{seed}/{m}/{j}"``,
  so test examples do not depend on the other test settings, and raising
  ``test_per_op`` only appends examples;
* validation example ``j`` of difficulty ``m``, attempt ``a``:
  ``"polyarith/valid/{seed}/{m}/{j}/{a}"``;
* train example ``i``, attempt ``a``: ``"polyarith/train/{seed}/{i}/{a}"``.

The splits never share a prompt: validation example ``(m, j)`` takes the
first attempt ``a = 0, 1, 2, ...`` whose prompt is not a test prompt, and
train example ``i`` the first attempt whose prompt is neither a test nor a
validation prompt (of the same seed and config). Collisions are real: with
the defaults, 72 of 200k training draws hit a test prompt and 12 a validation
prompt, since a ``neg`` expression with m = 1 has only 7^5 prompts
(``valid_per_op = 0`` gives the training set of the two-split version). :meth:`PolyArith.example`
applies the same rules, so ``build(split, seed)[i] == example(split, seed,
i)`` exactly; :meth:`PolyArith.draw` gives the example before exclusion.
Duplicates within one split are not removed (i.i.d. draws).

Small rings have few prompts (p = 2, k = 1, ops = neg has 2 prompts for every
m), so the config is checked: for every m of the test range, the number of
distinct prompts (:func:`count_expressions`) must exceed ``test_per_op +
valid_per_op``, which leaves validation and training prompts to draw. A draw
that still hits excluded prompts ``MAX_ATTEMPTS`` times in a row raises a
:class:`~lab.errors.UserError` instead of looping on.

Example:
    >>> task = PolyArith(PolyArithConfig(train_examples=3, test_per_op=2, valid_per_op=2))
    >>> rec = task.example("test", 0, 0)
    >>> rec["ops"], rec["prompt"].endswith("="), len(rec["answer"])
    (1, True, 5)
    >>> task.document({"prompt": "(10000+20000)=", "answer": "30000"})
    '(10000+20000)=30000\\n'
    >>> small = PolyArith(PolyArithConfig(p=3, k=2, ops=("add", "mul"), test_per_op=2, valid_per_op=2))
    >>> len(small.example("valid", 0, 0)["answer"]), set(small.example("train", 0, 0)["prompt"]) <= set("012(+*)=")
    (2, True)
"""

from __future__ import annotations

import functools
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, fields

from generators.polyring import PRIMES, ring
from generators.registry import Task, register
from lab.errors import UserError

P = 7  # the default modulus: coefficients in F7
N = 5  # the default number of coefficients: polynomials mod X^5
MAX_K = 64  # longest polynomial (digits) the config accepts
MAX_OPS = 256  # generation recurses once per operation; keeps far from Python's recursion limit
MAX_ATTEMPTS = 1000  # a valid/train draw gives up (UserError) after this many excluded prompts in a row
LEAF_TABLE_MAX = 1 << 16  # rings up to this size keep a table of their leaves (coefficients, text)

OPS = ("neg", "add", "mul", "compose")
SYMBOL = {"add": "+", "mul": "*", "compose": "@"}

# The paper's ring F7[X]/(X^5): its operations on 5-tuples, kept as module functions.
neg, add, mul, compose = ring(P, N).neg, ring(P, N).add, ring(P, N).mul, ring(P, N).compose


# ---------------------------------------------------------------------------
# Expressions: generation, counting, evaluation, text
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def sampler(p: int = P, k: int = N, ops: tuple[str, ...] = OPS):
    """``gen(rng, m) -> (tree, value, text)``: a random expression with m operations.

    The distribution is the module docstring's; the tree, its value in
    F_p[X]/(X^k) and its text are built together in one pass.

    Example:
        >>> gen = sampler(3, 2, ("mul",))
        >>> tree, value, text = gen(random.Random(0), 1)
        >>> tree["op"], len(value), text.count("*"), evaluate_tree(tree, p=3) == value
        ('mul', 2, 1, True)
    """
    r = ring(p, k)
    neg_, apply, size, n_ops = r.neg, {"add": r.add, "mul": r.mul, "compose": r.compose}, r.size, len(ops)
    if size <= LEAF_TABLE_MAX:
        leaf = [(c, r.format(c)) for c in map(r.element, range(size))].__getitem__
    else:
        def leaf(index):
            c = r.element(index)
            return c, r.format(c)

    def gen(rng: random.Random, m: int) -> tuple[dict, tuple, str]:
        if m == 0:
            coeffs, text = leaf(rng.randrange(size))
            return {"poly": list(coeffs)}, coeffs, text
        op = ops[rng.randrange(n_ops)]
        if op == "neg":
            tree, value, text = gen(rng, m - 1)
            return {"op": "neg", "args": [tree]}, neg_(value), "-" + text
        a = rng.randrange(m)  # operations in the left subtree; the right gets m-1-a
        lt, lv, ls = gen(rng, a)
        rt, rv, rs = gen(rng, m - 1 - a)
        return {"op": op, "args": [lt, rt]}, apply[op](lv, rv), f"({ls}{SYMBOL[op]}{rs})"

    return gen


def count_expressions(size: int, ops: tuple[str, ...], m: int, cap: int | None = None) -> int:
    """The number of distinct expressions (= distinct prompts) with exactly m operations.

    ``size`` is the number of leaves (p^k). With E(0) = size,
    ``E(m) = [neg in ops] E(m-1) + (binary ops) * sum_a E(a) E(m-1-a)``.
    E never decreases with m. With ``cap``, every value is capped at ``cap``
    (the result is exact when below it), which keeps the numbers small.

    Example:
        >>> count_expressions(2, ("neg",), 9), count_expressions(2, ("neg", "add"), 1)
        (2, 6)
        >>> count_expressions(7 ** 5, OPS, 1) == 7 ** 5 + 3 * 7 ** 10
        True
    """
    unary, binary = int("neg" in ops), sum(op != "neg" for op in ops)
    counts = [size if cap is None else min(size, cap)]
    for n in range(1, m + 1):
        count = unary * counts[n - 1] + binary * sum(counts[a] * counts[n - 1 - a] for a in range(n))
        counts.append(count if cap is None else min(count, cap))
    return counts[m]


def evaluate_tree(tree: dict, p: int = P) -> tuple:
    """The value of an expression tree (as stored in a record's ``expr``); k is the leaves' length.

    Example:
        >>> evaluate_tree({"op": "neg", "args": [{"poly": [1, 2, 0, 0, 0]}]})
        (6, 5, 0, 0, 0)
        >>> evaluate_tree({"op": "mul", "args": [{"poly": [1, 1]}, {"poly": [1, 1]}]}, p=2)  # (1+X)^2 = 1 mod X^2
        (1, 0)
    """
    if "poly" in tree:
        return tuple(tree["poly"])
    values = [evaluate_tree(t, p) for t in tree["args"]]
    r = ring(p, len(values[0]))
    return {"neg": r.neg, "add": r.add, "mul": r.mul, "compose": r.compose}[tree["op"]](*values)


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


def random_example(key: str, m: int, p: int = P, k: int = N, ops: tuple[str, ...] = OPS) -> dict:
    """The record drawn from ``random.Random(key)`` with m operations.

    Example:
        >>> rec = random_example("demo", 2)
        >>> rec == random_example("demo", 2), rec["ops"], sorted(rec)
        (True, 2, ['answer', 'expr', 'ops', 'prompt', 'result'])
    """
    return _record(random.Random(key), m, sampler(p, k, ops))


def _record(rng: random.Random, m: int, gen) -> dict:
    """Draw an expression with m operations from ``rng`` and package it as a record."""
    tree, value, text = gen(rng, m)
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

def _operator_set(value) -> tuple[str, ...]:
    """Check ``PolyArithConfig.ops`` and return it in canonical order (a str may list them with commas)."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
        raise UserError(f"polyarith.ops must be operator names (a subset of {', '.join(OPS)}), got {value!r}")
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise UserError(f"polyarith.ops is empty; name at least one operator of {', '.join(OPS)}")
    for n in names:
        if n not in OPS:
            raise UserError(f"polyarith.ops: unknown operator '{n}'; choose a non-empty subset of {', '.join(OPS)}")
        if names.count(n) > 1:
            raise UserError(f"polyarith.ops names '{n}' twice; it is a set (each operator is drawn with equal probability)")
    return tuple(op for op in OPS if op in names)


@dataclass(frozen=True)
class PolyArithConfig:
    """Sizes, difficulty ranges and ring of the polyarith task (defaults: the paper's).

    ``ops`` is stored in canonical order (neg, add, mul, compose); a string
    such as ``"add,neg"`` is accepted. Bad values raise a one-line UserError.

    Example:
        >>> PolyArithConfig(test_per_op=10).test_max_ops
        10
        >>> PolyArithConfig(ops="compose, neg").ops
        ('neg', 'compose')
    """

    train_examples: int = 200_000  # training examples (i.i.d. draws; test and validation prompts excluded)
    train_min_ops: int = 1  # training m is uniform in train_min_ops..train_max_ops (in-domain)
    train_max_ops: int = 5  # paper: 5; test m above this is out-of-domain
    test_min_ops: int = 1  # test and validation sets cover m = test_min_ops..test_max_ops
    test_max_ops: int = 10  # paper: 10
    test_per_op: int = 500  # test examples per m; the paper uses 2000, 500 is a smaller CPU default
    valid_per_op: int = 100  # validation examples per m (no prompt shared with test or train); 0: no valid split
    loss_on: str = "answer"  # "answer": loss on the answer tokens only; "all": on every token (paper: not stated)
    p: int = P  # the modulus: coefficients in F_p; a one-digit prime (2, 3, 5 or 7) so a coefficient is one token
    k: int = N  # coefficients per polynomial: the ring is F_p[X]/(X^k), k >= 1 (paper: 5)
    ops: tuple[str, ...] = OPS  # the operator set: a non-empty subset of neg, add, mul, compose (paper: all four)

    def __post_init__(self):
        if self.loss_on not in ("answer", "all"):
            raise UserError(f"polyarith.loss_on must be 'answer' or 'all', got '{self.loss_on}'")
        for f in fields(self):
            if f.name in ("loss_on", "ops"):
                continue
            value, low = getattr(self, f.name), 0 if f.name == "valid_per_op" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                kind = "a non-negative" if low == 0 else "a positive"
                raise UserError(f"polyarith.{f.name} must be {kind} integer, got {value!r}")
        if self.p not in PRIMES:
            raise UserError(f"polyarith.p must be a one-digit prime (2, 3, 5 or 7: each coefficient is one "
                            f"character), got {self.p}")
        if self.k > MAX_K:
            raise UserError(f"polyarith.k must be at most {MAX_K}, got {self.k}")
        object.__setattr__(self, "ops", _operator_set(self.ops))
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
        # counts grow with m, so the smallest test m is the one that can run out of prompts
        held_out = self.test_per_op + self.valid_per_op
        available = count_expressions(self.p ** self.k, self.ops, self.test_min_ops, cap=held_out + 1)
        if available <= held_out:
            raise UserError(f"polyarith: only {available} distinct prompts have m={self.test_min_ops} operations "
                            f"(p={self.p}, k={self.k}, ops={','.join(self.ops)}), not more than test_per_op + "
                            f"valid_per_op = {held_out}, and validation and training need prompts the test set leaves; "
                            "lower those, raise test_min_ops, or use a larger p, k or operator set")


def _metric(m: int) -> str:
    return f"accuracy/ops={m}"


_DEFAULT = PolyArithConfig()


@register
class PolyArith(Task):
    """Evaluate expressions over F_p[X]/(X^k) (default F7[X]/(X^5)); accuracy per number of operations.

    ``in_domain``/``ood`` on the class describe the default config; an
    instance sets its own from its config, and ``splits`` too (no
    ``"valid"`` when ``valid_per_op`` is 0).

    Example:
        >>> task = PolyArith(PolyArithConfig(train_examples=4, test_per_op=3, valid_per_op=2))
        >>> [r["ops"] for r in task.build("test", 0)][:4], [r["ops"] for r in task.build("valid", 0)][:4]
        ([1, 1, 1, 2], [1, 1, 2, 2])
        >>> len(task.build("train", 0)), task.ood[0], task.splits
        (4, 'accuracy/ops=6', ('train', 'valid', 'test'))
    """

    name = "polyarith"
    title = "Polynomial arithmetic"  # the figures' titles and difficulty axis (analysis.taskmeta)
    difficulty = "number of operations m"
    Config = PolyArithConfig
    objective = "accuracy/in_domain"
    direction = "maximize"
    in_domain = tuple(_metric(m) for m in range(_DEFAULT.train_min_ops, _DEFAULT.train_max_ops + 1))
    ood = tuple(_metric(m) for m in range(_DEFAULT.train_max_ops + 1, _DEFAULT.test_max_ops + 1))
    splits = ("train", "valid", "test")
    description = ("polynomial arithmetic in F_p[X]/(X^k) (default F7[X]/(X^5)): neg, add, mul, compose; "
                   "accuracy by number of ops (Gloeckle et al. 4.2)")

    def __init__(self, config: PolyArithConfig):
        super().__init__(config)
        c = config
        self.in_domain = tuple(_metric(m) for m in range(max(c.train_min_ops, c.test_min_ops), min(c.train_max_ops, c.test_max_ops) + 1))
        self.ood = tuple(_metric(m) for m in range(c.train_max_ops + 1, c.test_max_ops + 1))
        if not c.valid_per_op:
            self.splits = ("train", "test")
        self._gen = sampler(c.p, c.k, c.ops)
        self._prompts: dict[tuple[str, int], frozenset[str]] = {}  # (split, seed) -> prompts of valid/test

    # -- examples --------------------------------------------------------

    def _size(self, split: str) -> int:
        c = self.config
        if split not in self.splits:
            raise UserError(f"polyarith has splits {', '.join(repr(s) for s in self.splits)}, not '{split}'")
        if split == "train":
            return c.train_examples
        return (c.test_max_ops - c.test_min_ops + 1) * (c.test_per_op if split == "test" else c.valid_per_op)

    def draw(self, split: str, seed: int, index: int, attempt: int = 0) -> dict:
        """Example ``index`` of ``split`` *before* exclusion.

        Test (validation) example ``index`` has ``m = test_min_ops + index //
        test_per_op`` (``valid_per_op``): those splits are sorted by m; a train
        example draws its m first. ``attempt`` numbers the redraws of a train
        or validation example (ignored for test).

        Example:
            >>> task = PolyArith(PolyArithConfig(test_per_op=2, valid_per_op=3))
            >>> task.draw("test", 0, 2)["ops"], task.draw("valid", 0, 2)["ops"], task.draw("valid", 0, 3)["ops"]
            (2, 1, 2)
            >>> task.draw("train", 0, 0) == task.draw("train", 0, 0, attempt=0)
            True
        """
        size = self._size(split)
        if not 0 <= index < size:
            raise IndexError(f"polyarith {split} index {index} out of range 0..{size - 1}")
        c = self.config
        if split == "train":
            rng = random.Random(f"polyarith/train/{seed}/{index}/{attempt}")
            return _record(rng, rng.randint(c.train_min_ops, c.train_max_ops), self._gen)
        per_op = c.test_per_op if split == "test" else c.valid_per_op
        m, j = c.test_min_ops + index // per_op, index % per_op
        key = f"polyarith/test/{seed}/{m}/{j}" if split == "test" else f"polyarith/valid/{seed}/{m}/{j}/{attempt}"
        return _record(random.Random(key), m, self._gen)

    def _held_out(self, split: str, seed: int) -> frozenset[str]:
        """The prompts of the valid or test split for ``seed`` (cached)."""
        if (split, seed) not in self._prompts:
            records = self.build(split, seed) if split in self.splits else []
            self._prompts[split, seed] = frozenset(r["prompt"] for r in records)
        return self._prompts[split, seed]

    def test_prompts(self, seed: int) -> frozenset[str]:
        """The set of test prompts for ``seed`` (cached); validation and train examples avoid them.

        Example:
            >>> task = PolyArith(PolyArithConfig(test_per_op=2))
            >>> len(task.test_prompts(0)) <= 20
            True
        """
        return self._held_out("test", seed)

    def valid_prompts(self, seed: int) -> frozenset[str]:
        """The set of validation prompts for ``seed`` (cached; empty without a valid split); train avoids them.

        Example:
            >>> task = PolyArith(PolyArithConfig(test_per_op=2, valid_per_op=2))
            >>> task.valid_prompts(0).isdisjoint(task.test_prompts(0))
            True
        """
        return self._held_out("valid", seed)

    def _excluded(self, split: str, seed: int) -> frozenset[str]:
        """The prompts a draw of ``split`` must avoid: test for valid, test and valid for train."""
        if split == "valid":
            return self.test_prompts(seed)
        return self.test_prompts(seed) | self.valid_prompts(seed)

    def _first_allowed(self, split: str, seed: int, index: int, excluded: frozenset[str]) -> dict:
        """First attempt of example ``index`` of ``split`` (train or valid) whose prompt is not excluded."""
        for attempt in range(MAX_ATTEMPTS):
            rec = self.draw(split, seed, index, attempt)
            if rec["prompt"] not in excluded:
                return rec
        avoid = "a test prompt" if split == "valid" else "a test or validation prompt"
        raise UserError(f"polyarith: {split} example {index} (m={rec['ops']}) hit {avoid} {MAX_ATTEMPTS} times in a row; "
                        "the held-out sets cover (nearly) every expression of that size: lower test_per_op or "
                        "valid_per_op, or use a larger p, k or operator set")

    def example(self, split: str, seed: int, index: int) -> dict:
        """Example ``index`` of ``split``, exactly as ``build(split, seed)[index]``.

        Example:
            >>> task = PolyArith(PolyArithConfig(train_examples=5, test_per_op=2, valid_per_op=2))
            >>> task.example("train", 7, 3) == task.build("train", 7)[3], task.example("valid", 7, 3) == task.build("valid", 7)[3]
            (True, True)
        """
        if split == "test":
            return self.draw(split, seed, index)
        if not 0 <= index < self._size(split):
            raise IndexError(f"polyarith {split} index {index} out of range 0..{self._size(split) - 1}")
        return self._first_allowed(split, seed, index, self._excluded(split, seed))

    def build(self, split: str, seed: int) -> list[dict]:
        """All examples of ``split`` (``"train"``, ``"valid"`` or ``"test"``); valid and test are sorted by m.

        Example:
            >>> task = PolyArith(PolyArithConfig(train_examples=2, test_per_op=1, valid_per_op=1))
            >>> [r["ops"] for r in task.build("test", 0)] == [r["ops"] for r in task.build("valid", 0)] == list(range(1, 11))
            True
        """
        size = self._size(split)
        if split == "test":
            return [self.draw("test", seed, i) for i in range(size)]
        excluded = self._excluded(split, seed)
        return [self._first_allowed(split, seed, i, excluded) for i in range(size)]

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
        right in place (chance 1/p), a finer signal than exact match.

        Each prompt is the end-of-text token + ``prompt``; the model decodes up to k + 1 tokens
        with head 1 and stops at the newline. With ``limit``, only the first
        ``limit`` examples of each m are scored. ``test`` may be the test or
        the validation split (the trainer prefixes the latter's metrics ``valid/``).

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
        k, newline = self.config.k, enc.encode("\n")[0]
        prompts = [[enc.eot_token] + enc.encode(rec["prompt"]) for rec in records]
        outputs = greedy_generate(model, prompts, max_new_tokens=k + 1, stop_token=newline, device=device)
        hits: dict[int, list[bool]] = defaultdict(list)
        digits: dict[int, list[float]] = defaultdict(list)  # share of the k digits right, in place
        for rec, out in zip(records, outputs):
            text = enc.decode(out)
            hits[rec["ops"]].append(is_correct(text, rec["answer"]))
            digits[rec["ops"]].append(sum(a == b for a, b in zip(text[:k], rec["answer"])) / k)

        def mean(values) -> float:
            return sum(values) / len(values)

        c = self.config
        metrics = {_metric(m): mean(hits[m]) for m in sorted(hits)}
        # exact match (the paper's metric), then the per-digit accuracy (chance: 1/p), which shows
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

    def metric_names(self) -> tuple[str, ...]:
        """What :meth:`evaluate` returns: exact match and digit accuracy per m and per domain.

        Example:
            >>> PolyArith(PolyArithConfig(train_max_ops=1, test_max_ops=2)).metric_names()[:3]
            ('accuracy/ops=1', 'accuracy/ops=2', 'accuracy/in_domain')
        """
        c = self.config
        per_m = tuple(_metric(m) for m in range(c.test_min_ops, c.test_max_ops + 1))
        domains = ("in_domain", "all") + (("ood",) if c.test_max_ops > c.train_max_ops else ())
        return per_m + tuple(f"{kind}/{d}" for kind in ("accuracy", "digit_accuracy") for d in domains)

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
