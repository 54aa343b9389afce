"""bench train's worker: a timed step per variant, and the operator profile behind --profile."""

import pytest

from lab.bench import _worker, op_differences


@pytest.mark.parametrize("variant", ["nanogpt", "sequential"])
def test_profiled_worker_reports_its_operators(variant, one_thread):
    spec = dict(size="1M", n=1, head_kind="parallel", vocab=64, batch=2, context=16, steps=2, warmup=0,
                device="cpu", compile=False, variant=variant, profile=True)
    r = _worker(spec)
    assert r["tokens_per_s"] > 0 and r["params"]["total"] > 0
    ops = r["ops_ms"]
    assert any(name in ops for name in ("aten::mm", "aten::addmm", "aten::bmm")), sorted(ops)[:10]
    assert all(v > 0 for v in ops.values())
    # the two profiles compare operator by operator, largest difference first
    rows = op_differences(ops, {k: v / 2 for k, v in ops.items()}, top=3)
    assert [abs(a - b) for _, a, b in rows] == sorted((abs(a - b) for _, a, b in rows), reverse=True)
