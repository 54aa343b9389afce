"""Marginalization over intermediate tokens (lab.marginal): equal to brute-force enumeration of the joint
probabilities, top-m with m = V equal to exact, the approximation's error bounded by the mass it leaves out,
and head k's accuracy at the same positions, from x<=t only."""

import pytest
import torch

from lab.config import HEAD_KINDS, ModelConfig
from lab.marginal import approximation_error, future_accuracy, head_predictions, window_marginals
from lab.model import MTPModel

V = 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(kind="parallel", n=2, head_input="last", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(size="custom", d_model=16, layers=4, n_heads=2, n=n, head_kind=kind, vocab_size=V,
                      head_input=head_input).resolved()
    model = MTPModel(cfg).double().eval()
    with torch.no_grad():  # peakier distributions than at init (std 0.02 logits are almost uniform)
        model.lm_head.weight.mul_(40.0)
        for a in getattr(model, "head_mix", []):
            a.copy_(torch.randn(a.shape))
    return model


def _next(model, seq):
    """P(next token | seq) from head 1, without a cache: (V,)."""
    return model(torch.tensor([seq]), heads=1)[0][0, -1].softmax(-1)


def _brute_force(model, x, k):
    """P(x[t+k] = . | x<=t) by an explicit loop over every intermediate path, joint probabilities multiplied."""
    out = []
    for t in range(len(x) - k):
        prefix = x[:t + 1]
        total = torch.zeros(V, dtype=torch.float64)
        if k == 2:
            p1 = _next(model, prefix)
            for v in range(V):
                total += p1[v] * _next(model, prefix + [v])
        else:
            p1 = _next(model, prefix)
            for v1 in range(V):
                p2 = _next(model, prefix + [v1])
                for v2 in range(V):
                    total += p1[v1] * p2[v2] * _next(model, prefix + [v1, v2])
        out.append(total)
    return torch.stack(out)


@pytest.mark.parametrize("kind,head_input", [(k, "last") for k in HEAD_KINDS] + [("parallel", "weighted"),
                                                                              ("sequential", "weighted")])
def test_marginal_equals_brute_force_k2(kind, head_input):
    model = _model(kind, 2, head_input)
    x = torch.randint(0, V, (6,), generator=torch.Generator().manual_seed(1))
    p, mass = window_marginals(model, x, 2)
    ref = _brute_force(model, x.tolist(), 2)
    torch.testing.assert_close(p, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mass, torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)
    # the accuracy future_accuracy reports is that of the brute-force marginal's argmax
    acc = future_accuracy(model, x[None], ks=(2,))["future_acc/k=2/marginal"]
    assert acc == pytest.approx(float((ref.argmax(-1) == x[2:]).double().mean()))


def test_marginal_equals_brute_force_k3_and_top_m_equals_exact_at_m_v():
    model = _model("parallel", 3)
    x = torch.randint(0, V, (6,), generator=torch.Generator().manual_seed(2))
    ref = _brute_force(model, x.tolist(), 3)
    p, _ = window_marginals(model, x, 3)
    torch.testing.assert_close(p, ref, rtol=1e-10, atol=1e-12)
    for k in (2, 3):  # the top-m tree with m = V keeps every path: the exact marginal (summed in another order)
        exact, _ = window_marginals(model, x, k)
        q, mass = window_marginals(model, x, k, top_m=V)
        torch.testing.assert_close(q, exact, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(mass, torch.ones_like(mass), rtol=0, atol=1e-12)


def test_top_m_error_is_bounded_by_the_mass_left_out():
    model = _model("parallel", 1)
    windows = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(3))
    err = approximation_error(model, windows, 2, ms=tuple(range(1, V + 1)))
    masses = [err[m]["mass"] for m in range(1, V + 1)]
    assert masses == sorted(masses) and masses[-1] == pytest.approx(1.0, abs=1e-12) and masses[0] < 1
    for m, e in err.items():
        assert e["positions"] == 12 and e["tv"] <= 1 - e["mass"] + 1e-12, (m, e)
        assert e["acc_exact"] == err[V]["acc_exact"]
    assert err[V]["tv"] < 1e-12 and err[V]["argmax_agree"] == 1.0 and err[V]["acc_top_m"] == err[V]["acc_exact"]
    # per position too: the renormalised top-m marginal is within (1 - mass) of the exact one
    x = windows[0]
    exact, _ = window_marginals(model, x, 2)
    q, mass = window_marginals(model, x, 2, top_m=2)
    assert ((0.5 * (q / mass[:, None] - exact).abs().sum(-1)) <= 1 - mass + 1e-12).all()


def test_head_accuracy_at_the_same_positions():
    model = _model("parallel", 3)
    x = torch.randint(0, V, (2, 7), generator=torch.Generator().manual_seed(4))
    out = future_accuracy(model, x, ks=(2, 3))
    logits = model(x)
    for k in (2, 3):
        hits = [int(logits[k - 1][b, t].argmax() == x[b, t + k]) for b in range(2) for t in range(7 - k)]
        assert out[f"future_acc/k={k}/head"] == pytest.approx(sum(hits) / len(hits))
        marg = torch.cat([window_marginals(model, x[b], k)[0] for b in range(2)])
        assert out[f"future_acc/k={k}/marginal"] == pytest.approx(
            float((marg.argmax(-1) == torch.cat([x[b, k:] for b in range(2)])).double().mean()))
        assert out[f"future_acc/k={k}/marginal_mass"] == 1.0
    # no head 3 in an n=2 model: only the marginal is reported for k=3
    assert "future_acc/k=3/head" not in future_accuracy(_model("parallel", 2), x, ks=(3,))


def test_sequential_head_predictions_read_nothing_past_t():
    model = _model("sequential", 3)
    x = torch.randint(0, V, (1, 7), generator=torch.Generator().manual_seed(5))
    preds = head_predictions(model, x)
    for t in range(6):
        y = x.clone()
        y[0, t + 1:] = (y[0, t + 1:] + 1) % V  # every token after t changed
        assert torch.equal(head_predictions(model, y)[:, :, :t + 1], preds[:, :, :t + 1]), t


def test_mask_budget_and_approximation_switch():
    model = _model("parallel", 2)
    x = torch.randint(0, V, (3, 6), generator=torch.Generator().manual_seed(6))
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[1, 3:5] = mask[2, 2:4] = True  # x[t+1], x[t+2] scored at two positions: x[1, 4] (t=2) and x[2, 3] (t=1)
    mask[0, 4] = True  # x[0, 4] scored but not x[0, 3]: no position (the token summed over is not a target)
    out = future_accuracy(model, x, ks=(2,), mask=mask)
    p1, p2 = window_marginals(model, x[1], 2, None, [2])[0], window_marginals(model, x[2], 2, None, [1])[0]
    expected = (int(p1.argmax() == x[1, 4]) + int(p2.argmax() == x[2, 3])) / 2
    assert out["future_acc/k=2/marginal"] == pytest.approx(expected)
    # max_positions: the first positions of the first windows only
    out = future_accuracy(model, x, ks=(2,), max_positions=3)
    p = window_marginals(model, x[0], 2, None, [0, 1, 2])[0]
    assert out["future_acc/k=2/marginal"] == pytest.approx(float((p.argmax(-1) == x[0, 2:5]).double().mean()))
    # beyond exact_limit the top-m tree is used: mass < 1
    approx = future_accuracy(model, x, ks=(2,), top_m=2, exact_limit=V - 1)
    assert approx["future_acc/k=2/marginal_mass"] < 1.0
    with pytest.raises(ValueError, match="k >= 2"):
        future_accuracy(model, x, ks=(1,))
