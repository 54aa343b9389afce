"""Truncated polynomial rings F_p[X]/(X^k): the arithmetic behind ``polyarith``.

An element is a polynomial of degree < k with coefficients in F_p = {0..p-1},
stored as the tuple of its k coefficients ``(c0, c1, ..., c_{k-1})`` (``ci``
is the coefficient of X^i). This tuple is the canonical representative of a
class of F_p[X]/(X^k). The four operations are

* ``neg``: ``-a``, coefficient-wise mod p;
* ``add``: ``a + b``, coefficient-wise mod p;
* ``mul``: ``a * b`` with the terms of degree >= k dropped (product mod X^k);
* ``compose``: ``a @ b = a(b(X)) mod X^k``: substitute the polynomial ``b``
  for ``X`` in ``a``, expand, reduce coefficients mod p and drop the terms of
  degree >= k.

*Why compose is well defined.* Reduction mod X^k, ``F_p[X] -> F_p[X]/(X^k)``,
is a ring homomorphism, and substituting any element ``b`` of a commutative
ring for ``X`` in a polynomial ``a`` (the evaluation map ``a -> a(b)``) is a
ring homomorphism too. Hence ``a(b) mod X^k`` depends only on ``b mod X^k``:
if ``b' = b + X^k s`` then every power ``b'^j`` equals ``b^j`` mod X^k, so
``sum cj b'^j = sum cj b^j`` mod X^k. It also means the result can be computed
entirely inside the ring (Horner's rule with truncated products, as
:meth:`Ring.compose` does), giving the same answer as expanding in F_p[X] and
truncating at the end. The substitution is *formal*: ``b`` may have a nonzero
constant term (``X^2 @ (1 + X) = 1 + 2X + X^2``). Because ``a`` has degree
< k, ``a(b)`` is a finite sum and nothing needs ``b(0) = 0`` to converge. One
subtlety: the result depends on ``a`` through its canonical (degree < k)
representative. When ``b(0) != 0``, another representative ``a + X^k s`` of
the same class would give a different value (``X^k @ 1 = 1`` although
``X^k = 0`` in the ring), so compose is a map on coefficient tuples, well
defined in ``b``'s class, exactly as the task uses it.

Example:
    >>> r = ring(7, 5)                       # F7[X]/(X^5), the paper's ring
    >>> r.mul((1, 1, 0, 0, 0), (1, 1, 0, 0, 0))
    (1, 2, 1, 0, 0)
    >>> ring(2, 3).compose((0, 0, 1), (1, 1, 0))   # X^2 @ (1 + X) = 1 + X^2 over F2
    (1, 0, 1)
"""

from __future__ import annotations

import functools

PRIMES = (2, 3, 5, 7)  # the moduli whose coefficients are one character (one token) each


def _unrolled_mul(p: int, k: int):
    """The truncated product of F_p[X]/(X^k) as straight-line Python code.

    The generator's inner loop: unrolled, it is ~7x faster than a loop over
    index pairs (:func:`mul_reference`, the definition, which the tests compare
    it with). For k = 2, p = 3 the generated function is::

        def mul(a, b):
            a0, a1, = a
            b0, b1, = b
            return ((a0 * b0) % 3, (a0 * b1 + a1 * b0) % 3,)

    Example:
        >>> _unrolled_mul(3, 2)((1, 2), (2, 2))     # (1 + 2X)(2 + 2X) = 2 + 6X + 4X^2
        (2, 0)
    """
    terms = [" + ".join(f"a{i} * b{n - i}" for i in range(n + 1)) for n in range(k)]
    source = (f"def mul(a, b):\n"
              f"    {''.join(f'a{i}, ' for i in range(k))}= a\n"
              f"    {''.join(f'b{i}, ' for i in range(k))}= b\n"
              f"    return ({''.join(f'({t}) % {p}, ' for t in terms)})\n")
    namespace: dict = {}
    exec(compile(source, f"<polyring.mul p={p} k={k}>", "exec"), namespace)
    return namespace["mul"]


def mul_reference(p: int, a: tuple, b: tuple) -> tuple:
    """The truncated product by its definition: coefficient n is sum_i a[i] b[n-i] mod p.

    Example:
        >>> mul_reference(7, (0, 0, 1, 0, 0), (0, 0, 0, 1, 0))   # X^2 * X^3 = X^5 = 0
        (0, 0, 0, 0, 0)
    """
    return tuple(sum(a[i] * b[n - i] for i in range(n + 1)) % p for n in range(len(a)))


class Ring:
    """F_p[X]/(X^k) on coefficient tuples; build it with :func:`ring` (cached).

    ``mul`` is an attribute holding the generated, unrolled product (see
    :func:`_unrolled_mul`); ``neg``, ``add`` and ``compose`` are methods.

    Example:
        >>> r = ring(7, 5)
        >>> r.neg((1, 0, 6, 0, 3)), r.add((3, 4, 0, 0, 6), (5, 3, 1, 0, 1))
        ((6, 0, 1, 0, 4), (1, 0, 1, 0, 0))
        >>> r.mul((0, 0, 1, 0, 0), (0, 0, 0, 1, 0))     # X^2 * X^3 = X^5 = 0
        (0, 0, 0, 0, 0)
        >>> r.compose((2, 0, 0, 0, 0), (5, 5, 5, 5, 5))  # a constant ignores b
        (2, 0, 0, 0, 0)
        >>> r.element(3 + 2 * 7), r.format((3, 0, 1, 6, 2)), r.size
        ((3, 2, 0, 0, 0), '30162', 16807)
    """

    def __init__(self, p: int, k: int):
        if p not in PRIMES:
            raise ValueError(f"p must be one of {PRIMES}, got {p!r}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.p, self.k, self.size = p, k, p ** k
        self.mul = _unrolled_mul(p, k)

    def __repr__(self) -> str:
        return f"Ring(p={self.p}, k={self.k})"

    def neg(self, a: tuple) -> tuple:
        """-a, coefficient-wise mod p."""
        p = self.p
        return tuple((-c) % p for c in a)

    def add(self, a: tuple, b: tuple) -> tuple:
        """a + b, coefficient-wise mod p."""
        p = self.p
        return tuple((x + y) % p for x, y in zip(a, b))

    def compose(self, a: tuple, b: tuple) -> tuple:
        """a(b(X)) mod X^k (formal substitution; b may have a constant term).

        Horner's rule, ``c0 + b*(c1 + b*(c2 + ... + b*c_{k-1}))``, with
        truncated products; equal to expanding in F_p[X] and truncating (see
        the module docstring).

        Example:
            >>> ring(7, 5).compose((0, 0, 1, 0, 0), (1, 1, 0, 0, 0))  # X^2 @ (1 + X) = 1 + 2X + X^2
            (1, 2, 1, 0, 0)
            >>> ring(5, 1).compose((3,), (4,))                          # k = 1: just the constants
            (3,)
        """
        p, mul = self.p, self.mul
        result = (a[-1],) + (0,) * (self.k - 1)
        for c in reversed(a[:-1]):
            r = mul(result, b)
            result = ((r[0] + c) % p,) + r[1:]
        return result

    def element(self, index: int) -> tuple:
        """Element number ``index`` (0 <= index < p^k): its coefficients are the base-p digits of index, lowest first.

        One ``randrange(p^k)`` thus draws all k coefficients independently and uniformly.
        """
        p = self.p
        return tuple((index // p ** i) % p for i in range(self.k))

    @staticmethod
    def format(a: tuple) -> str:
        """The k coefficient digits written together, c0 first (one character each: p <= 7)."""
        return "".join(map(str, a))


@functools.lru_cache(maxsize=None)
def ring(p: int, k: int) -> Ring:
    """The (cached) ring F_p[X]/(X^k).

    Example:
        >>> ring(3, 4) is ring(3, 4), ring(3, 4)
        (True, Ring(p=3, k=4))
    """
    return Ring(p, k)
