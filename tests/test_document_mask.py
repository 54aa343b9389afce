"""Attention within packed documents (train.document_mask): a document in a window is computed as if alone."""

import pytest
import torch

from lab.config import HEAD_KINDS, ModelConfig
from lab.loss import naive_backward, next_token_nll, sequential_backward
from lab.model import MTPModel, document_mask

EOT = 0


def _model(kind, n):
    torch.manual_seed(0)
    cfg = ModelConfig(size="custom", d_model=32, layers=5, n_heads=4, n=n, head_kind=kind, vocab_size=41).resolved()
    return MTPModel(cfg).double()


def _states(model, idx, tokens, attn_mask=None):
    h = model.trunk_forward(idx, attn_mask=attn_mask)
    return [model.logits(z) for z in model.head_states(h, tokens, attn_mask=attn_mask)]


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_a_document_in_a_packed_window_is_computed_as_if_alone(kind):
    n = 3
    model = _model(kind, n)
    g = torch.Generator().manual_seed(1)
    first = torch.randint(1, 41, (7,), generator=g)  # the cut tail of an earlier document (no eot)
    doc = torch.cat([torch.tensor([EOT]), torch.randint(1, 41, (9,), generator=g)])
    last = torch.cat([torch.tensor([EOT]), torch.randint(1, 41, (5,), generator=g)])
    window = torch.cat([first, doc, last])[None]  # (1, 22)
    following = torch.cat([window, torch.randint(1, 41, (1, n - 1), generator=g)], 1)  # T + n - 1 true tokens
    packed = _states(model, window, following, document_mask(window, EOT))
    alone = _states(model, doc[None], torch.cat([doc, last])[None])  # sequential heads read the true next tokens
    start, length = len(first), len(doc)
    for i in range(n):
        torch.testing.assert_close(packed[i][0, start:start + length], alone[i][0], rtol=1e-9, atol=1e-10)
    # without the mask the earlier document leaks into this one
    plain = _states(model, window, following)
    assert not torch.allclose(plain[0][0, start:start + length], alone[0][0], atol=1e-6)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_document_masked_sequential_backward_equals_naive(kind):
    model = _model(kind, 3)
    window = torch.randint(1, 41, (3, 16 + 3))
    window[:, [0, 5, 11]] = EOT
    mask = window != EOT
    grads = []
    for fn in (sequential_backward, naive_backward):
        model.zero_grad(set_to_none=True)
        fn(model, window, mask, scale=0.5, eot=EOT)
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-10, atol=1e-12, msg=k)


def test_document_masked_nll_does_not_see_the_previous_document():
    model = _model("parallel", 1)
    window = torch.randint(1, 41, (1, 17))
    window[0, 8] = EOT
    changed = window.clone()
    changed[0, :8] = (changed[0, :8] + 3) % 40 + 1  # another earlier document, same current one
    mask = torch.zeros_like(window, dtype=torch.bool)
    mask[0, 9:] = True  # score the second document only
    a = next_token_nll(model, window, mask, eot=EOT)
    b = next_token_nll(model, changed, mask, eot=EOT)
    assert a[1] == b[1] == [8]
    assert abs(a[0][0] - b[0][0]) < 1e-9
    assert abs(next_token_nll(model, window, mask)[0][0] - next_token_nll(model, changed, mask)[0][0]) > 1e-6
