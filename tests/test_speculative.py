"""Self-speculative decoding: identical to greedy decoding for every head kind, a correct KV cache,
drafts equal to an uncached reference, exact acceptance bookkeeping, the CLI and its bad input."""

import json

import pytest
import torch

from generators import registry
from lab import speculative as spec
from lab import train as train_mod
from lab.agreement import agreement_windows, head_agreement
from lab.bench_decode import decode_ceilings, row_lengths
from lab.cli import build_parser, main
from lab.config import HEAD_KINDS, ModelConfig, build_run_config
from lab.decode import greedy_generate, pick, task_prompts
from lab.model import Block, MTPModel, StackedHeads

V = 23


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (and the test machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(kind, n=3, seed=0, layers=5, head_input="last"):
    torch.manual_seed(seed)
    cfg = ModelConfig(size="custom", d_model=32, layers=layers, n_heads=2, n=n, head_kind=kind, vocab_size=V,
                      head_input=head_input)
    model = MTPModel(cfg.resolved()).eval()
    if head_input == "weighted":  # mixes away from their init (99% on the last state): every state matters
        with torch.no_grad():
            for a in model.head_mix:
                a.copy_(torch.randn(a.shape))
    return model


def _engines(kind):
    return [True, False] if kind in spec.FUSABLE else [True]


# ---------------------------------------------------------------- random models

@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_cached_greedy_equals_uncached(kind):
    model = _model(kind)
    x = torch.randint(0, V, (3, 7))
    ref = spec.uncached_greedy(model, x, 20)
    assert torch.equal(model.generate(x, 20), ref)
    stop = int(ref[1, 9])  # a token row 1 produces mid-way: exercises the stop rule
    assert torch.equal(model.generate(x, 20, stop_token=stop), spec.uncached_greedy(model, x, 20, stop_token=stop))


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_speculative_equals_greedy_random_models(kind):
    model = _model(kind, n=3)
    for batch in (1, 3):
        x = torch.randint(0, V, (batch, 6))
        plain = model.generate(x, 25)
        for stop in (None, int(plain[-1, 11])):  # no stop; a stop token met mid-way (rows end apart)
            ref = spec.pad_after_stop(model.generate(x, 25, stop_token=stop), stop)  # a stopped row stays stopped
            for k, fused in [(1, True), (2, True), (3, True)] + ([(3, False)] if kind in spec.FUSABLE else []):
                stats = spec.DecodeStats()
                out = spec.speculative_generate(model, x, 25, heads=k, stop_token=stop, stats=stats, fused=fused)
                assert torch.equal(out, ref), (batch, stop, k, fused)
                assert stats.tokens == sum(row_lengths(out, stop))  # each row up to its stop token
            for max_new in (1, 2, 7):  # max_new_tokens cuts a block
                assert torch.equal(spec.speculative_generate(model, x, max_new, heads=3, stop_token=stop),
                                   spec.pad_after_stop(model.generate(x, max_new, stop_token=stop), stop))


def test_fused_heads_compute_the_models_heads():
    for kind in spec.FUSABLE:
        model = _model(kind, n=4)
        engine = spec.make_engine(model, 2, 12, 4)
        assert isinstance(engine, spec._FusedEngine)
        cache = model.new_cache(2, 12)
        h = torch.randn(2, 9, 32)
        for a, b in ((0, 5), (5, 8), (8, 9)):
            engine.length = a
            cache.seek(a)
            ref = torch.stack(model.head_states(h[:, a:b], None, cache=cache))
            torch.testing.assert_close(engine.head_states(h[:, a:b]), ref, rtol=1e-5, atol=1e-6)
        # the stacked weights are kept per model, and rebuilt after an in-place update (optimizer step)
        x = torch.randint(0, V, (2, 5))
        assert torch.equal(spec.speculative_generate(model, x, 12), model.generate(x, 12))
        stacked = spec.stacked_heads(model, 4)
        assert spec.stacked_heads(model, 4) is stacked
        with torch.no_grad():
            for p in model.heads.parameters():
                p.mul_(3.0)
        assert torch.equal(spec.speculative_generate(model, x, 12), model.generate(x, 12))
        stacked = spec.stacked_heads(model, 4)
        weight = stacked.linear.weight if kind == "linear" else stacked.attn.qkv.weight
        head = model.heads[3] if kind == "linear" else model.heads[3].attn.qkv
        assert torch.equal(weight[3], head.weight.t())
        assert not any("speculative" in name or "stacked" in name for name in vars(model))  # nothing kept on the model


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_weighted_hidden_states_decode_identically(kind):
    """WHS heads (head_input=weighted): cached greedy = uncached greedy; speculative = greedy, fused or not."""
    model = _model(kind, n=3, seed=1, head_input="weighted")
    x = torch.randint(0, V, (2, 6))
    ref = spec.uncached_greedy(model, x, 16)
    assert torch.equal(model.generate(x, 16), ref)
    for k, fused in [(2, True), (3, True)] + ([(3, False)] if kind in spec.FUSABLE else []):
        assert torch.equal(spec.speculative_generate(model, x, 16, heads=k, fused=fused), ref), (k, fused)
    if kind not in spec.FUSABLE:
        return
    # the fused heads read their own mixes of the stacked states, and are rebuilt when a mix changes
    engine = spec.make_engine(model, 2, 12, 3)
    cache = model.new_cache(2, 12)
    states = torch.randn(model.config.trunk_layers + 1, 2, 9, 32)
    for a, b in ((0, 5), (5, 9)):
        engine.length = a
        cache.seek(a)
        ref_z = torch.stack(model.head_states(states[:, :, a:b], None, cache=cache))
        torch.testing.assert_close(engine.head_states(states[:, :, a:b]), ref_z, rtol=1e-5, atol=1e-6)
    stacked = spec.stacked_heads(model, 3)
    with torch.no_grad():
        model.head_mix[2].mul_(-2.0)
    assert spec.stacked_heads(model, 3) is not stacked
    assert torch.equal(spec.speculative_generate(model, x, 16), model.generate(x, 16))
    # without the mixes, stacked WHS heads refuse (they would read the wrong input)
    with pytest.raises(ValueError, match="needs the 3 heads' mixing logits"):
        StackedHeads(model.config, model.heads)


class _ScaledBlock(Block):
    """A head Block whose output differs from what StackedHeads computes for a Block."""

    def forward(self, x, rope, cache=None, attn_mask=None):
        return 2 * super().forward(x, rope, cache, attn_mask)


class _RenamedMLP(torch.nn.Module):
    """The MLP with its layers renamed (as a refactor of lab.model might): the model still works."""

    def __init__(self, mlp):
        super().__init__()
        self.fc, self.proj = mlp.up, mlp.down

    def forward(self, x):
        return self.proj(torch.nn.functional.gelu(self.fc(x)))


def test_fused_path_fails_loudly_when_the_heads_do_not_match():
    """A head the stacked module does not mirror raises; it never decodes slowly (or wrongly) in silence."""
    x = torch.randint(0, V, (2, 5))
    # a head whose code differs: the check against the model's own heads catches it
    model = _model("parallel", n=3)
    scaled = _ScaledBlock(model.config, model.heads[1].slot)
    scaled.load_state_dict(model.heads[1].state_dict())
    model.heads[1] = scaled
    with pytest.raises(RuntimeError, match="do not compute this model's parallel heads"):
        spec.speculative_generate(model, x, 8)
    with pytest.raises(RuntimeError, match="StackedHeads"):
        spec.make_engine(model, 2, 16, 2)
    # ... and the unfused engine, asked for, still decodes it exactly
    assert torch.equal(spec.speculative_generate(model, x, 8, fused=False), model.generate(x, 8))
    # a renamed field: building the stacked heads fails (it no longer finds the layers to stack)
    model = _model("parallel", n=3)
    model.heads[2].mlp = _RenamedMLP(model.heads[2].mlp)
    assert torch.equal(spec.speculative_generate(model, x, 8, fused=False), model.generate(x, 8))
    with pytest.raises(AttributeError, match="up"):
        spec.speculative_generate(model, x, 8)
    # heads that cannot be stacked at all
    with pytest.raises(ValueError, match="heads do not all read the trunk output"):
        StackedHeads(_model("causal").config, _model("causal").heads)


def test_stacked_heads_name_a_layer_they_do_not_stack(monkeypatch):
    """A new weight in the attention (say a query norm) is named, not left on the meta device to fail later."""
    import lab.model

    class _QueryNormAttention(lab.model.CausalSelfAttention):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.q_norm = lab.model.Norm(cfg.d_model)

    monkeypatch.setattr(lab.model, "CausalSelfAttention", _QueryNormAttention)
    model = _model("parallel", n=2)
    with pytest.raises(ValueError, match=r"does not stack attn\.q_norm\.weight"):
        spec.make_engine(model, 1, 8, 2)


def _reference_drafts(model, seq, nxt, drafts, k):
    """Heads 2..k at the last position of seq, without a cache.

    Sequential module j reads the token after each position: the accepted
    tokens, then head 1's next token nxt, then the drafts of modules 2..j-1.
    """
    L = seq.shape[1]
    tokens = torch.cat([seq, nxt[:, None], drafts[:, :-1]], dim=1)
    zs = model.head_states(model.trunk_forward(seq), tokens, upto=k)
    assert zs[0].shape[1] == L
    return torch.stack([model.logits(z[:, -1]).argmax(-1) for z in zs[1:]], dim=1)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_drafts_equal_uncached_reference(kind):
    """Every step's drafts are what the heads give on the accepted sequence without a cache.

    Accepting 1..k positions in turn exercises the cache roll-back; for
    sequential heads it checks the lagged module caches (entries computed from
    drafts and recomputed once the true token is known).
    """
    model = _model(kind, n=4, seed=3)
    k = 4
    x = torch.randint(0, V, (2, 5))
    engine = spec.make_engine(model, 2, 64, k)
    with torch.no_grad():
        seq, nxt = x, engine.forward(x)[:, -1]
        drafts = engine.accept(5, nxt)
        for step in range(9):
            assert torch.equal(drafts, _reference_drafts(model, seq, nxt, drafts, k)), step
            block = torch.cat([nxt[:, None], drafts], dim=1)
            g = engine.forward(block)
            n_acc = 1 + step % k
            seq = torch.cat([seq, block[:, :n_acc]], dim=1)
            nxt = g[:, n_acc - 1]
            drafts = engine.accept(n_acc, nxt)


class _Oracle:
    """Wraps an engine; its drafts are the true greedy tokens except where ``wrong`` says so.

    ``wrong`` holds (row, j): that row's draft of token j of ``truth`` is wrong.
    Each row keeps its own position (rows accept different numbers of drafts).
    """

    def __init__(self, engine, truth, wrong):
        self.engine, self.truth, self.wrong, self.k = engine, truth, wrong, engine.k
        self.pos = None  # per row: index in truth of the token after nxt

    def forward(self, block):
        return self.engine.forward(block)

    def accept(self, n, nxt):
        B = self.truth.shape[0]
        self.pos = torch.ones(B, dtype=torch.long) if self.pos is None else self.pos + n
        self.engine.accept(n, nxt)
        d = torch.full((B, self.k - 1), V - 1)
        for row in range(B):
            for i in range(self.k - 1):
                j = int(self.pos[row]) + i
                if j < self.truth.shape[1]:
                    d[row, i] = self.truth[row, j]
                if (row, j) in self.wrong:
                    d[row, i] = (d[row, i] + 1) % V
        return d


def _min_acceptance_forwards(wrong, rows, length, k):
    """Forwards the old batched loop needed: every row accepts the fewest drafts any row accepted."""
    pos, emitted, forwards = 1, 1, 0
    while emitted < length:
        size = min(k, length - emitted)
        agreed = min(next((i for i in range(size - 1) if (r, pos + i) in wrong), size - 1) for r in range(rows))
        pos, emitted, forwards = pos + agreed + 1, emitted + agreed + 1, forwards + 1
    return forwards


def test_acceptance_bookkeeping_with_oracle_drafts():
    model = _model("parallel", n=4)
    x = torch.randint(0, V, (2, 4))
    truth = model.generate(x, 40)
    # all drafts right: every forward emits k tokens (the last block is cut by max_new_tokens)
    stats = spec.DecodeStats()
    eng = _Oracle(spec.make_engine(model, 2, 60, 4), truth, set())
    out = spec.run_loop(eng, x, 40, None, stats)
    assert torch.equal(out, truth)
    assert stats.forwards == 10 and stats.advanced == 2 * 39  # 9 blocks of 4 tokens, then one of 3 (per row)
    assert stats.acceptance() == {2: 1.0, 3: 1.0, 4: 1.0}
    # ... which is exactly the ceiling bench decode prints for 40-token outputs
    assert round(stats.tokens_per_forward, 2) == decode_ceilings([40], 4)["max_tokens_per_forward"] == 3.9
    # row 0's draft of token 6 is wrong: head 3 is rejected once and head 4 is then not verified in that step
    stats = spec.DecodeStats()
    eng = _Oracle(spec.make_engine(model, 1, 60, 4), truth[:1], {(0, 6)})
    out = spec.run_loop(eng, x[:1], 40, None, stats)
    assert torch.equal(out, truth[:1])
    assert stats.forwards == 11
    # blocks: 4 tokens, 2 (the rejection), 8 x 4, then 1 (no drafts): 10 blocks verify drafts
    assert (stats.drafted[2], stats.accepted[2]) == (10, 10)
    assert (stats.drafted[3], stats.accepted[3]) == (10, 9)
    assert (stats.drafted[4], stats.accepted[4]) == (9, 9)


def test_rows_advance_independently_with_oracle_drafts():
    """Each row of a batch keeps what IT accepted: the batch takes the forwards of its slowest row alone.

    The old loop accepted the fewest drafts any row accepted, so rows rejecting
    drafts at different places slowed each other down (more forwards than
    either row alone, which this test would catch).
    """
    model = _model("parallel", n=4)
    x = torch.randint(0, V, (3, 4))
    truth = model.generate(x, 40)
    wrong = {(0, j) for j in (4, 12, 20, 28, 36)} | {(1, j) for j in (6, 14, 22, 30, 38)}  # row 2: all right
    single = []
    for row in range(3):
        s = spec.DecodeStats()
        one = {(0, j) for r, j in wrong if r == row}
        out = spec.run_loop(_Oracle(spec.make_engine(model, 1, 60, 4), truth[row:row + 1], one), x[row:row + 1],
                            40, None, s)
        assert torch.equal(out, truth[row:row + 1])
        single.append(s)
    stats = spec.DecodeStats()
    out = spec.run_loop(_Oracle(spec.make_engine(model, 3, 60, 4), truth, wrong), x, 40, None, stats)
    assert torch.equal(out, truth)
    assert [s.forwards for s in single] == [10, 11, 10]
    assert stats.forwards == max(s.forwards for s in single) == 11
    assert _min_acceptance_forwards(wrong, 3, 40, 4) == 15  # what the old loop needed: the rows held each other up
    assert stats.row_forwards == sum(s.forwards for s in single)
    assert stats.advanced == sum(s.advanced for s in single) == 3 * 39
    for j in (2, 3, 4):
        assert stats.drafted[j] == sum(s.drafted[j] for s in single), j
        assert stats.accepted[j] == sum(s.accepted[j] for s in single), j
    assert stats.tokens_per_forward == pytest.approx(3 * 39 / sum(s.forwards for s in single))


def _stop_of(model, prompts, max_new):
    """A token that some rows produce early and others late or never: rows of a batch stop apart."""
    plain = greedy_generate(model, prompts, max_new)
    return plain[len(plain) // 2][max_new // 3]


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_rows_of_different_lengths_and_stops_equal_greedy_and_advance_independently(kind):
    """Prompts of different lengths in one batch, stop tokens met at different times: every row is its greedy
    output (cut at its stop token, then stop tokens), and the batch needs the forwards of its slowest row alone."""
    model = _model(kind, n=3, seed=7)
    g = torch.Generator().manual_seed(7)
    prompts = [torch.randint(0, V, (n,), generator=g).tolist() for n in (3, 9, 5, 1, 7, 4)]
    lengths = torch.tensor([len(p) for p in prompts])
    x = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long)
    for row, p in enumerate(prompts):
        x[row, :len(p)] = torch.tensor(p)
        x[row, len(p):] = V - 1  # padding the rows must never see
    for stop in (None, _stop_of(model, prompts, 24)):
        alone = [model.generate(torch.tensor([p]), 24, stop_token=stop)[0] for p in prompts]
        for k, fused in [(1, True), (3, True)] + ([(3, False)] if kind in spec.FUSABLE else []):
            stats = spec.DecodeStats()
            out = spec.speculative_generate(model, x, 24, heads=k, stop_token=stop, stats=stats, fused=fused,
                                            lengths=lengths)
            assert out.shape[1] == max(len(a) for a in alone), (stop, k, fused)
            for row, ref in enumerate(alone):
                assert torch.equal(out[row, :len(ref)], ref), (stop, k, fused, row)
                assert out[row, len(ref):].tolist() == [stop] * (out.shape[1] - len(ref))  # stopped rows stay stopped
            singles = []
            for p in prompts:
                s = spec.DecodeStats()
                spec.speculative_generate(model, torch.tensor([p]), 24, heads=k, stop_token=stop, stats=s,
                                          fused=fused)
                singles.append(s)
            assert stats.forwards == max(s.forwards for s in singles), (stop, k, fused)
            assert stats.row_forwards == sum(s.forwards for s in singles), (stop, k, fused)
            assert stats.tokens == sum(len(a) for a in alone)
        # the library entry point: prompts of any lengths batched together, cut like greedy decoding
        assert spec.speculative_decode(model, prompts, 24, stop_token=stop, batch_size=4) == \
            greedy_generate(model, prompts, 24, stop_token=stop)


def test_batched_rows_match_single_rows():
    model = _model("causal", n=3, seed=5)
    x = torch.randint(0, V, (5, 8))
    both = spec.speculative_generate(model, x, 30)
    for row in range(5):
        assert torch.equal(spec.speculative_generate(model, x[row:row + 1], 30)[0], both[row])


def test_decoding_in_inference_mode_leaves_the_model_trainable():
    """Decoding runs under torch.inference_mode; positions past the RoPE table grow it there, and training
    (a backward through the grown table) must still work afterwards, with the same gradients."""
    model = _model("sequential_shared", n=2, seed=6).train()
    x = torch.randint(0, V, (2, 8))
    sum(logits.sum() for logits in model(x)).backward()
    before = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    rows = model.rope._table.shape[0]
    spec.speculative_generate(model.eval(), torch.randint(0, V, (1, rows - 2)), 8)  # past the table's end
    assert model.rope._table.shape[0] > rows and not model.rope._table.is_inference()
    sum(logits.sum() for logits in model.train()(x)).backward()
    for a, p in zip(before, model.parameters()):
        torch.testing.assert_close(p.grad, a)


def test_per_row_cache_attends_only_to_its_own_slots():
    """A KV cache with per-row lengths: each row's attention equals that row run alone with a plain cache."""
    model = _model("parallel", n=2, seed=2)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, V, (3, 9), generator=g)
    cache = model.new_cache(3, 16)
    with torch.no_grad():
        model.trunk_forward(torch.full((3, 9), V - 1), cache)  # junk in every slot the rows will not write
        lengths = torch.tensor([2, 6, 4])
        cache.seek(torch.zeros(3, dtype=torch.long))
        model.trunk_forward(torch.where(torch.arange(9) < lengths[:, None], x, V - 1), cache)
        cache.seek(lengths)
        block = torch.randint(0, V, (3, 3), generator=g)
        h = model.trunk_forward(block, cache)
        for row in range(3):
            n = int(lengths[row])
            ref = model.trunk_forward(torch.cat([x[row, :n], block[row]])[None])[0, n:]
            torch.testing.assert_close(h[row], ref, rtol=1e-5, atol=1e-5)


def test_speculative_decode_groups_lengths_like_greedy_generate():
    model = _model("sequential", n=2)
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8], [9], [10, 11]]
    plain = greedy_generate(model, prompts, 12)
    stop = plain[0][5]
    assert spec.speculative_decode(model, prompts, 12, stop_token=stop, batch_size=2) == \
        greedy_generate(model, prompts, 12, stop_token=stop)


def test_bad_heads():
    model = _model("parallel", n=2)
    x = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(spec.UserError, match="larger than the model's n=2"):
        spec.speculative_generate(model, x, 4, heads=3)
    with pytest.raises(spec.UserError, match="at least 1"):
        spec.speculative_generate(model, x, 4, heads=0)
    with pytest.raises(spec.UserError, match="non-empty prompt"):
        spec.speculative_generate(model, x[:, :0], 4)


def test_head_agreement_definition():
    model = _model("parallel", n=3)
    x = torch.randint(0, V, (2, 10))
    got = head_agreement(model, x)
    with torch.no_grad():
        p = [lg.argmax(-1) for lg in model(x)]
    for k in (2, 3):
        hits = [bool(p[k - 1][b, t] == p[0][b, t + k - 1]) for b in range(2) for t in range(10 - k + 1)]
        assert got[f"agreement/head={k}"] == pytest.approx(sum(hits) / len(hits))
    lead = [(1 + int(p[1][b, t] == p[0][b, t + 1]) * (1 + int(p[2][b, t] == p[0][b, t + 2])))
            for b in range(2) for t in range(8)]
    assert got["agreement/tokens_per_forward"] == pytest.approx(sum(lead) / len(lead))
    assert head_agreement(model, [list(range(10)), list(range(5, 12))]).keys() == got.keys()
    assert head_agreement(_model("parallel", n=1), x) == {}


# ---------------------------------------------------------------- trained tiny models

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    mp = pytest.MonkeyPatch()
    mp.setenv("MTPLAB_CACHE_DIR", str(root / "cache"))
    out = {}
    for name, n, kind in (("n4", 4, "parallel"), ("n2", 2, "sequential"), ("n1", 1, "parallel")):
        cfg = build_run_config(registry.get("polyarith"), {
            "task.train_examples": 300, "task.test_per_op": 3, "model.size": "custom", "model.d_model": 32,
            "model.layers": 5, "model.n_heads": 2, "model.n": n, "model.head_kind": kind,
            "train.steps": 20 if n > 1 else 1, "train.batch_tokens": 512, "train.context": 64,
            "train.lr": 3e-3, "train.warmup_steps": 3, "train.progress": False, "train.device": "cpu"})
        train_mod.run(cfg, root / name, quiet=True)
        out[name] = root / name
    cfg = build_run_config(registry.get("induction"), {  # stories: continued, no prompt/answer records
        "task.train_stories": 300, "task.test_stories": 10, "task.valid_stories": 10, "task.vocab_size": 400,
        "model.size": "custom", "model.d_model": 32, "model.layers": 3, "model.n_heads": 2, "model.n": 2,
        "model.head_kind": "linear", "train.steps": 1, "train.batch_tokens": 512, "train.context": 64,
        "train.progress": False, "train.device": "cpu"})
    train_mod.run(cfg, root / "ind", quiet=True)
    out["ind"] = root / "ind"
    yield out
    mp.undo()


def test_trained_models_decode_identically(runs):
    for name in ("n4", "n2"):
        config, task, data, model, _ = train_mod.load_run(runs[name], torch.device("cpu"))
        prompts, stop, longest = task_prompts(task, pick(data.test, 8), data.enc)
        assert stop == data.enc.encode("\n")[0] and longest == 6
        n = model.config.n
        for max_new, s in ((longest, stop), (40, None)):  # the answers; then on past them (packed documents)
            plain = greedy_generate(model, prompts, max_new, stop_token=s, batch_size=4)
            for k in sorted({2, n}):
                stats = spec.DecodeStats()
                assert spec.speculative_decode(model, prompts, max_new, heads=k, stop_token=s, batch_size=4,
                                               stats=stats) == plain, (name, max_new, s, k)
                if s is None:
                    assert stats.tokens_per_forward > 1.0  # a trained model's drafts are accepted sometimes
        x = torch.tensor([prompts[0]] * 3)
        assert torch.equal(spec.speculative_generate(model, x, 40), model.generate(x, 40))
        assert torch.equal(spec.uncached_greedy(model, x[:1], 40), model.generate(x[:1], 40))  # the KV cache
        agree = head_agreement(model, agreement_windows(task, data.test, data.enc, 64))
        assert set(agree) == {f"agreement/head={k}" for k in range(2, n + 1)} | {"agreement/tokens_per_forward"}
        assert all(0.0 <= v <= 1.0 for key, v in agree.items() if "head=" in key)
        assert 1.0 <= agree["agreement/tokens_per_forward"] <= n


def test_decode_cli(runs, capsys):
    assert main(["decode", str(runs["n4"]), "--prompt", "(10000+20000)=", "--prompt=-12345=",
                 "--heads", "4", "--check"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2 and all(line.endswith("\\n") or len(line) <= 64 for line in lines)
    assert "tokens per forward" in captured.err and "identical" in captured.err


def test_decode_cli_on_stories_stops_at_the_end_of_text(runs, capsys):
    """A task whose texts are continued (induction) has no answer end: decode stops at the end-of-text token."""
    from lab.speculative_cli import _stop_token

    config, task, data, model, _ = train_mod.load_run(runs["ind"], torch.device("cpu"))
    args = build_parser().parse_args(["decode", str(runs["ind"]), "--prompt", "x"])
    assert _stop_token(args, task, data) == data.enc.eot_token
    assert main(["decode", str(runs["ind"]), "--prompt", "Once upon a time", "--max-new-tokens", "12",
                 "--check"]) == 0
    assert "identical" in capsys.readouterr().err


def test_decode_cli_prompts_file_and_no_stop(runs, tmp_path, capsys):
    f = tmp_path / "p.txt"
    f.write_text("(10000+20000)=\n-12345=\n(1+2)=\n")
    assert main(["decode", str(runs["n2"]), "--prompts-file", str(f), "--max-new-tokens", "30", "--no-stop",
                 "--check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3


def test_bench_decode_cli(runs, tmp_path, capsys):
    js = tmp_path / "b.json"
    assert main(["bench", "decode", str(runs["n4"]), "--limit", "6", "--repeats", "1", "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "tokens/fwd" in text and "paper" in text and "NO" not in text
    result = json.loads(js.read_text())
    assert set(result["k"]) == {"1", "2", "3", "4"} and all(r["identical"] for r in result["k"].values())
    assert result["k"]["1"]["tokens_per_forward"] == 1.0
    assert all(r["tokens_per_forward"] <= r["max_tokens_per_forward"] + 0.005 for r in result["k"].values())
    assert "ceiling" in text
    # the step breakdown: its parts are non-negative and do not exceed the loop; k = 1 drafts nothing
    assert "where a step's time goes" in text
    for k, r in result["k"].items():
        prof = r["profile"]
        assert min(prof["verify_ms"], prof["draft_ms"]) >= 0 and prof["verify_per_greedy"] > 0
        assert prof["speedup_free_drafting"] >= r["speedup"]
    one = result["k"]["1"]["profile"]
    assert one["draft_ms"] < 0.5 * one["verify_ms"]  # k = 1 drafts nothing (an empty tensor)
    assert main(["bench", "decode", str(runs["n4"]), "--limit", "3", "--repeats", "1", "--max-new-tokens", "40",
                 "--batch-size", "3", "--heads", "1,4"]) == 0
    assert "(no stop token)" in capsys.readouterr().out


def test_bench_decode_cli_several_batch_sizes_side_by_side(runs, tmp_path, capsys):
    js = tmp_path / "bs.json"
    assert main(["bench", "decode", str(runs["n4"]), "--mode", "continue", "--prompt-tokens", "8",
                 "--max-new-tokens", "12", "--limit", "6", "--repeats", "1", "--heads", "1,4",
                 "--batch-size", "1,3", "--json", str(js)]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("method"))
    assert header.split() == ["method", "batch", "1", "batch", "3"]
    assert "plain greedy" in text and "identical to plain greedy decoding: yes" in text
    result = json.loads(js.read_text())
    assert result["batch_sizes"] == [1, 3] and set(result["by_batch_size"]) == {"1", "3"}
    for size, r in result["by_batch_size"].items():
        assert r["batch_size"] == int(size) and r["rows_per_batch"] == int(size)  # 6 prompts of one length
        assert all(v["identical"] for v in r["k"].values())
    # each row keeps its own acceptance: the tokens per forward do not depend on the batch size
    tpf = [r["k"]["4"]["tokens_per_forward"] for r in result["by_batch_size"].values()]
    assert tpf[0] == pytest.approx(tpf[1])


def test_bench_decode_continue_mode_decodes_held_out_texts_past_their_prompt(runs, tmp_path, capsys):
    js = tmp_path / "c.json"
    assert main(["bench", "decode", str(runs["n4"]), "--mode", "continue", "--prompt-tokens", "12",
                 "--max-new-tokens", "40", "--limit", "4", "--repeats", "1", "--heads", "1,4", "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("continue held-out texts (12-token prompts); 4 prompts") and "(no stop token)" in text
    result = json.loads(js.read_text())
    assert result["mode"] == "continue" and result["max_new_tokens"] == 40 and result["stop_token"] is None
    assert all(r["identical"] for r in result["k"].values())
    # no stop: every prompt decodes all 40 tokens, so the k=4 ceiling is 39 / ceil(39 / 4) = 3.9 tokens per forward
    assert result["k"]["4"]["max_tokens_per_forward"] == 3.9


def test_default_workload_is_the_task_s_and_fits_the_context():
    from lab.decode import continuation_prompts, default_workload

    class Stories:
        decode_mode = "continue"

        def document(self, rec):
            return rec["text"]

    assert default_workload(Stories(), 128) == ("continue", 32, 96)
    assert default_workload(Stories(), 2048) == ("continue", 128, 256)
    assert default_workload(registry.create("polyarith", {}), 256) == ("answers", 0, 0)
    from lab.tokenizers import byte_encoding
    enc = byte_encoding()
    prompts = continuation_prompts(Stories(), [{"text": "abcdef"}, {"text": "ab"}], enc, 4)
    assert prompts == [[enc.eot_token, *b"abc"]]  # the short text is left out
    from lab.errors import UserError
    with pytest.raises(UserError, match="longer than every held-out text .the longest is 7 tokens"):
        continuation_prompts(Stories(), [{"text": "abcdef"}], enc, 8)


@pytest.mark.parametrize("argv,message", [
    (["bench", "decode", "{n4}", "--mode", "continue", "--prompt-tokens", "500", "--max-new-tokens", "1"],
     "past the model's context of 64"),
    (["bench", "decode", "{n4}", "--prompt-tokens", "8"], "is for --mode continue"),
    (["bench", "decode", "{n4}", "--mode", "sideways"], "invalid choice"),
    (["bench", "decode", "{ind}", "--mode", "answers"], "have no prompt and answer (its texts are continued"),
    (["decode", "{n1}", "--prompt", "1="], "n=1"),
    (["decode", "{n4}", "--prompt", "1=", "--heads", "5"], "larger than the model's n=4"),
    (["decode", "{n4}", "--prompt", "1" * 80], "longer than the model's context of 64"),
    (["decode", "{n4}", "--prompt", ""], "empty"),
    (["decode", "{n4}"], "at least one prompt"),
    (["decode", "{n4}", "--prompts-file", "/nonexistent.txt"], "does not exist"),
    (["decode", "{n4}", "--prompt", "1=", "--stop", "ab"], "one token"),
    (["decode", "{n4}", "--prompt", "1=", "--max-new-tokens", "0"], "at least 1"),
    (["decode", "/nonexistent/run", "--prompt", "1="], "not a run folder"),
    (["bench", "decode", "{n1}"], "n=1"),
    (["bench", "decode", "{n4}", "--heads", "1,7"], "larger than"),
    (["bench", "decode", "{n4}", "--heads", "x"], "comma-separated"),
    (["bench", "decode", "{n4}", "--batch-size", "1,x"], "--batch-size expects comma-separated integers"),
    (["bench", "decode", "{n4}", "--batch-size", "4,0"], "--batch-size must be at least 1"),
])
def test_bad_input_is_one_line_exit_2(runs, capsys, argv, message):
    argv = [a.format(**{k: str(v) for k, v in runs.items()}) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_empty_prompt_is_a_user_error_in_the_library_path():
    # the library function itself, not only the CLI, must say what is wrong (it once raised NameError)
    from lab.decode import run_batched
    from lab.errors import UserError

    with pytest.raises(UserError, match="prompt 2 is empty"):
        run_batched([[1], []], lambda x: x[:, -1:])
