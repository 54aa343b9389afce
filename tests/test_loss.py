"""The memory-efficient backward gives the naive summed loss's gradients, for every head kind."""

import math

import pytest
import torch
import torch.nn.functional as F

from lab.config import HEAD_KINDS, ModelConfig
from lab.errors import UserError
from lab.loss import naive_backward, sequential_backward
from lab.model import MTPModel


def _grads(model, fn, window, scale=1.0, mask=None):
    model.zero_grad(set_to_none=True)
    stats = fn(model, window, mask, scale=scale)
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}, stats


def _model(kind, n, weights=(), on_top=False, head_input="last"):
    torch.manual_seed(0)
    cfg = ModelConfig(size="custom", d_model=32, layers=5, n_heads=4, n=n, head_kind=kind, vocab_size=61,
                      loss_weights=weights, heads_on_top=on_top, head_input=head_input).resolved()
    model = MTPModel(cfg).double()
    if head_input == "weighted":  # mixes away from their init, so that every hidden state matters
        with torch.no_grad():
            for a in model.head_mix:
                a.copy_(torch.randn(a.shape))
    return model


@pytest.mark.parametrize("kind", HEAD_KINDS)
@pytest.mark.parametrize("n,weights", [(1, ()), (3, ()), (4, (1.0, 0.5, 0.25, 2.0))])
def test_sequential_backward_equals_naive(kind, n, weights):
    model = _model(kind, n, weights)
    window = torch.randint(0, 61, (3, 12 + n))
    g_seq, s_seq = _grads(model, sequential_backward, window, scale=0.5)
    g_naive, s_naive = _grads(model, naive_backward, window, scale=0.5)
    # every parameter gets a gradient (embedding, trunk, every head, norm, unembedding)
    assert set(g_seq) == {k for k, _ in model.named_parameters()}
    assert set(g_seq) == set(g_naive)
    for k in g_seq:
        torch.testing.assert_close(g_seq[k], g_naive[k], rtol=1e-10, atol=1e-12, msg=k)
    for a, b in zip(s_seq["loss"], s_naive["loss"]):
        assert abs(float(a) - float(b)) < 1e-12


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_masked_targets_sequential_equals_naive_and_ignores_context(kind):
    """With a loss mask (Task.context), both backwards agree, and masked targets have no effect."""
    model = _model(kind, 3, (1.0, 0.5, 2.0))
    window = torch.randint(0, 61, (3, 12 + 3))
    mask = torch.rand(window.shape) < 0.5
    g_seq, _ = _grads(model, sequential_backward, window, mask=mask)
    g_naive, _ = _grads(model, naive_backward, window, mask=mask)
    for k in g_seq:
        torch.testing.assert_close(g_seq[k], g_naive[k], rtol=1e-10, atol=1e-12, msg=k)
    # changing a masked-out target token (one that is never an input: the last column) changes nothing
    masked_last = ~mask[:, -1]
    if masked_last.any():
        w2 = window.clone()
        w2[masked_last, -1] = (w2[masked_last, -1] + 1) % 61
        g2, _ = _grads(model, naive_backward, w2, mask=mask)
        if kind != "sequential":  # sequential heads read true future tokens as inputs
            for k in g2:
                torch.testing.assert_close(g2[k], g_naive[k], rtol=1e-10, atol=1e-12, msg=k)


def test_naive_backward_is_the_weighted_sum_of_shifted_cross_entropies():
    """An independent check of the loss definition: head i predicts x[t+i]."""
    model = _model("parallel", 3, (1.0, 0.5, 2.0))
    window = torch.randint(0, 61, (2, 10 + 3))
    g_naive, stats = _grads(model, naive_backward, window)
    T = 10
    model.zero_grad(set_to_none=True)
    logits = model(window[:, :T])
    total = sum(w * F.cross_entropy(lg.flatten(0, 1), window[:, i + 1:i + 1 + T].flatten())
                for i, (lg, w) in enumerate(zip(logits, (1.0, 0.5, 2.0))))
    total.backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g_naive[k], rtol=1e-10, atol=1e-12)


def test_heads_on_top_and_matching_change_trunk_depth():
    assert ModelConfig(size="1M", n=4).resolved().trunk_layers == 1
    assert ModelConfig(size="1M", n=4, heads_on_top=True).resolved().trunk_layers == 4
    m1, m4 = _model("parallel", 1), _model("parallel", 4)
    # parameter matching: same number of parameters for n=1 and n=4
    assert m1.param_counts() == m4.param_counts()
    assert _model("parallel", 4, on_top=True).param_counts()["total"] > m4.param_counts()["total"]


def test_sequential_heads_read_the_true_next_tokens():
    """Changing token t+2 must change head 3's output at position t (DeepSeek-style teacher forcing)
    but not head 1's (which is causal in the inputs only)."""
    model = _model("sequential", 3).eval()
    window = torch.randint(0, 61, (1, 8 + 3))
    h = model.trunk_forward(window[:, :8])
    z1 = model.head_states(h, window)
    w2 = window.clone()
    w2[0, 5] = (w2[0, 5] + 1) % 61  # token at t=5 is the true token t+2 seen by head 3 at t=3
    z2 = model.head_states(h, w2)
    assert torch.equal(z1[0], z2[0])
    assert not torch.allclose(z1[2][0, 3], z2[2][0, 3])
    assert torch.allclose(z1[2][0, :2], z2[2][0, :2])  # positions before see other tokens only


# ---------------------------------------------------------------- weighted hidden states (head_input=weighted)

@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_weighted_hidden_states_sequential_backward_equals_naive(kind):
    """WHS heads: the memory-efficient backward still gives the naive summed loss's gradients, mixes included."""
    model = _model(kind, 3, (1.0, 0.5, 2.0), head_input="weighted")
    assert len(model.head_mix) == (3 if kind in ("parallel", "linear") else 1)  # one mix per head reading the trunk
    window = torch.randint(0, 61, (2, 8 + 3))
    g_seq, s_seq = _grads(model, sequential_backward, window, scale=0.5)
    g_naive, s_naive = _grads(model, naive_backward, window, scale=0.5)
    assert set(g_seq) == set(g_naive) == {k for k, _ in model.named_parameters()}
    assert all(g_seq[f"head_mix.{i}"].abs().min() > 0 for i in range(len(model.head_mix)))  # every state is read
    for k in g_seq:
        torch.testing.assert_close(g_seq[k], g_naive[k], rtol=1e-10, atol=1e-12, msg=k)
    for a, b in zip(s_seq["loss"], s_naive["loss"]):
        assert abs(float(a) - float(b)) < 1e-12


@pytest.mark.parametrize("kind", ["parallel", "sequential"])
def test_weighted_hidden_states_read_the_chosen_states(kind):
    """A one-hot mix on the last state is the "last" model exactly; on state 0 the heads read the embedding."""
    last, whs = _model(kind, 2), _model(kind, 2, head_input="weighted")
    assert not set(whs.load_state_dict(last.state_dict(), strict=False).missing_keys) - {"head_mix.0", "head_mix.1"}
    x = torch.randint(0, 61, (2, 7))
    states = whs.trunk_forward(x)
    assert states.shape == (whs.config.trunk_layers + 1, 2, 7, 32)
    assert torch.equal(states[0], whs.tok_emb(x)) and torch.equal(states[-1], last.trunk_forward(x))
    # init: 99% on the last state, the rest spread evenly
    fresh = MTPModel(whs.config)
    assert torch.allclose(fresh.head_mix[0].softmax(0)[-1], torch.tensor(0.99))
    with torch.no_grad():
        for a in whs.head_mix:
            a.fill_(-math.inf)[-1] = 0.0
    for got, ref in zip(whs(x), last(x)):
        assert torch.equal(got, ref)
    with torch.no_grad():
        for a in whs.head_mix:
            a.fill_(-math.inf)[0] = 0.0
    z = whs.head_states(whs.trunk_forward(x), torch.cat([x, x[:, :1]], 1))
    assert torch.equal(z[0], whs.heads[0](whs.tok_emb(x), whs.rope))


def test_head_input_is_validated():
    with pytest.raises(UserError, match="unknown model.head_input 'mixed'; choose one of last, weighted"):
        ModelConfig(size="1M", head_input="mixed").resolved()


def test_sequential_shared_is_one_module_at_every_depth(tmp_path):
    """sequential_shared: heads 2..n are one module (one set of parameters, gradient summed over the depths)."""
    shared = _model("sequential_shared", 4)
    assert shared.heads[1] is shared.heads[2] is shared.heads[3] and shared.config.trunk_layers == 3
    # parameter-matched like a 2-head sequential model: head 1's layer and one module, whatever n
    assert shared.param_counts() == _model("sequential", 2).param_counts()
    # the module's gradient is the sum of what each depth contributes: depth 4's loss alone moves it too
    window = torch.randint(0, 61, (2, 10 + 4))
    g, _ = _grads(shared, lambda m, w, mask, scale: naive_backward(m, w, mask, scale=scale, weights=(0, 0, 0, 1.0)),
                  window)
    assert float(g["heads.1.merge.weight"].abs().sum()) > 0 and "heads.3.merge.weight" not in g
    # a checkpoint round trip keeps the sharing and the function
    path = tmp_path / "m.pt"
    torch.save(shared.state_dict(), path)
    again = MTPModel(shared.config).double()
    again.load_state_dict(torch.load(path))
    assert again.heads[1] is again.heads[3]
    x = torch.randint(0, 61, (2, 9))
    for a, b in zip(shared(x), again(x)):
        assert torch.equal(a, b)
