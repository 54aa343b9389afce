"""MTP heads added to a trained next-token model (train.init_from), freezing, per-part lrs, head warmup, loss anneal."""

import json
import shutil

import pytest
import torch

from generators import registry
from lab import finetune
from lab import train as train_mod
from lab.cli import main
from lab.config import ModelConfig, TrainConfig, build_run_config
from lab.loss import naive_backward, sequential_backward
from lab.model import MTPModel

# A tiny n=1 model (2 trunk layers + its head); the runs that start from it add heads on top of the same 3 layers.
SRC = {
    "task.train_examples": 400, "task.test_per_op": 2, "task.valid_per_op": 1, "model.size": "custom",
    "model.d_model": 32, "model.layers": 3, "model.n_heads": 2, "model.n": 1, "train.steps": 3,
    "train.batch_tokens": 256, "train.context": 64, "train.micro_batch": 2, "train.log_interval": 1,
    "train.progress": False, "train.warmup_steps": 1, "train.marginal_positions": 0, "train.lr": 3e-3,
}
SRC_FLAGS = [f"--set={k}={v}" for k, v in SRC.items() if k not in ("model.n", "train.progress")] + ["--no-progress"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trained n=1 run folder."""
    run_dir = tmp_path_factory.mktemp("src") / "ntp"
    train_mod.run(build_run_config(registry.get("polyarith"), SRC), run_dir, quiet=True)
    return run_dir


def _cfg(source, **over):
    return build_run_config(registry.get("polyarith"), {**SRC, "model.n": 3, "train.init_from": str(source), **over})


def _trainer(tmp_path, source, **over):
    """A run's state, without its folder: for stepping the loop by hand."""
    return train_mod._Run(_cfg(source, **over), tmp_path / "run", resume=False, quiet=True)


def _state(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _trunk(names):
    return [k for k in names if finetune.part_of(k) == "trunk"]


def test_init_from_reproduces_the_source_s_next_token_logits(tmp_path, source):
    src = train_mod.load_run(source)[3]
    r = _trainer(tmp_path, source)
    assert r.model.config.heads_on_top and r.model.config.trunk_layers == src.config.trunk_layers == 2
    idx = torch.randint(0, src.config.vocab_size, (2, 20))
    with torch.no_grad():
        assert torch.equal(r.model(idx, heads=1)[0], src(idx)[0])
        # copy init: the added heads are the source's head, so they predict what it does (before training)
        logits = r.model(idx)
        assert all(torch.equal(lg, logits[0]) for lg in logits[1:])
    assert r.source.meta()["step"] == 3 and r.source.n == 1
    # random init: the added heads are fresh, the shared head still the source's
    rr = _trainer(tmp_path, source, **{"train.init_heads": "random"})
    with torch.no_grad():
        assert torch.equal(rr.model(idx, heads=1)[0], src(idx)[0])
        assert not torch.equal(rr.model.heads[1].mlp.up.weight, src.heads[0].mlp.up.weight)


@pytest.mark.parametrize("init_heads", ["copy", "random"])
def test_weighted_hidden_states_from_a_last_layer_source(tmp_path, source, init_heads):
    """WHS on an n=1 source: head 1 keeps reading the last layer (logits within 1e-5), added heads learn mixes."""
    from lab.model import whs_init_logits
    src = train_mod.load_run(source)[3]
    r = _trainer(tmp_path, source, **{"model.head_input": "weighted", "train.init_heads": init_heads})
    idx = torch.randint(0, src.config.vocab_size, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(r.model(idx, heads=1)[0], src(idx)[0], rtol=0, atol=1e-5)
        assert not torch.equal(r.model(idx, heads=1)[0], src(idx)[0])  # it does read the mix, a 1e-6 share of it
    w = r.model.head_mix[0].detach().softmax(0)
    assert float(w[:-1].sum()) < 1.01e-6
    for mix in r.model.head_mix[1:]:  # the added heads: the ordinary WHS start, free to move
        assert torch.equal(mix.detach(), whs_init_logits(3))
    before = [m.detach().clone() for m in r.model.head_mix]
    for _ in range(3):
        r.train_step()
    assert all(not torch.equal(b, m.detach()) for b, m in zip(before[1:], r.model.head_mix[1:]))


@pytest.mark.parametrize("freeze", ["trunk", "trunk,source_heads"])
def test_frozen_parts_stay_bit_identical_and_have_no_optimizer_state(tmp_path, source, freeze):
    r = _trainer(tmp_path, source, **{"train.freeze": freeze})
    before = _state(r.model)
    for _ in range(3):
        r.train_step()
    after = _state(r.model)
    frozen = {k for k in before if finetune.part_of(k, n_source=1) in r.config.train.frozen}
    assert frozen and frozen >= set(_trunk(before))
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in before if k not in frozen and k.endswith("up.weight"))
    params = dict(r.model.named_parameters())
    in_optimizer = {id(p) for g in r.optimizer.param_groups for p in g["params"]}
    assert not any(id(params[k]) in in_optimizer or params[k] in r.optimizer.state for k in frozen)
    assert len(r.optimizer.state) == len(before) - len(frozen)
    if "source_heads" in freeze:  # the source model itself is untouched: its next-token logits too
        src = train_mod.load_run(source)[3]
        idx = torch.randint(0, src.config.vocab_size, (2, 16))
        with torch.no_grad():
            assert torch.equal(r.model(idx, heads=1)[0], src(idx)[0])


def test_head_warmup_trains_only_the_heads_for_k_steps(tmp_path, source):
    r = _trainer(tmp_path, source, **{"train.head_warmup_steps": 2})
    start = _state(r.model)
    trunk = _trunk(start)
    for _ in range(2):
        r.train_step()
    warm = _state(r.model)
    assert all(torch.equal(start[k], warm[k]) for k in trunk)
    assert not any(r.optimizer.state.get(p) for k, p in r.model.named_parameters() if k in trunk)
    assert not torch.equal(start["heads.0.mlp.up.weight"], warm["heads.0.mlp.up.weight"])
    r.train_step()
    joint = _state(r.model)
    assert all(not torch.equal(warm[k], joint[k]) for k in trunk if k.endswith(".weight") and "norm" not in k)


def test_lr_multipliers_scale_the_schedule_per_part(tmp_path, source):
    r = _trainer(tmp_path, source, **{"train.trunk_lr_mult": 0.1, "train.head_lr_mult": 2.5})
    part = {id(p): finetune.part_of(k, 1) for k, p in r.model.named_parameters()}
    for step in range(3):
        r.train_step(log=False)
        base = train_mod.lr_at(step, r.total, r.config.train)
        for g in r.optimizer.param_groups:
            mult = 0.1 if {part[id(p)] for p in g["params"]} == {"trunk"} else 2.5
            assert {part[id(p)] == "trunk" for p in g["params"]} == {mult == 0.1}  # one part per group
            assert g["lr"] == pytest.approx(base * mult, rel=1e-12)
    # default multipliers: the two groups of before (old checkpoints resume)
    groups = finetune.param_groups(r.model, TrainConfig())
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


def _grads(model, fn, window, weights=None):
    model.zero_grad(set_to_none=True)
    fn(model, window, weights=weights)
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["parallel", "causal", "sequential", "sequential_shared"])
@pytest.mark.parametrize("frozen_trunk", [False, True])
def test_annealed_weights_and_frozen_trunk_keep_sequential_equal_to_naive(kind, frozen_trunk):
    torch.manual_seed(0)
    cfg = ModelConfig(size="custom", d_model=32, layers=4, n_heads=4, n=3, head_kind=kind, vocab_size=61,
                      heads_on_top=True, loss_weights=(1.0, 0.8, 0.6)).resolved()
    model = MTPModel(cfg).double()
    tc = TrainConfig(loss_weight_anneal_steps=10, loss_weights_end=(0.0, 0.2), freeze=("trunk",) if frozen_trunk else ())
    weights = finetune.loss_weights_at(cfg, tc, 4)
    assert weights == pytest.approx((1.0, 0.48, 0.44))
    if frozen_trunk:
        finetune.freeze(model, tc)
    window = torch.randint(0, 61, (3, 12 + 3))
    g_seq, g_naive = _grads(model, sequential_backward, window, weights), _grads(model, naive_backward, window, weights)
    assert set(g_seq) == set(g_naive) == {k for k, p in model.named_parameters() if p.requires_grad}
    for k in g_seq:
        torch.testing.assert_close(g_seq[k], g_naive[k], rtol=1e-10, atol=1e-12, msg=k)
    # and the naive loss is the sum of the heads' CEs with the annealed weights
    model.zero_grad(set_to_none=True)
    T = 12
    logits = model(window[:, :T]) if not kind.startswith("sequential") else [
        model.logits(z) for z in model.head_states(model.trunk_forward(window[:, :T]), window)]
    total = sum(w * torch.nn.functional.cross_entropy(lg.flatten(0, 1), window[:, i + 1:i + 1 + T].flatten())
                for i, (lg, w) in enumerate(zip(logits, weights)))
    total.backward()
    for k, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, g_naive[k], rtol=1e-10, atol=1e-12, msg=k)


def test_resume_of_an_init_from_run_equals_the_uninterrupted_run(tmp_path, source, crash_at):
    over = {"train.steps": 6, "train.checkpoint_interval": 2, "train.eval_interval": 3, "train.head_warmup_steps": 2,
            "train.trunk_lr_mult": 0.5, "train.loss_weight_anneal_steps": 4, "train.loss_weights_end": "0.25",
            "train.freeze": "source_heads"}
    full = train_mod.run(_cfg(source, **over), tmp_path / "full", quiet=True)
    stored = json.loads((tmp_path / "full" / "config.json").read_text())
    assert stored["train"]["init_from"] == str(source) and stored["model"]["heads_on_top"]
    assert stored["meta"]["init_from"] == {"run_dir": str(source.resolve()), "step": 3, "finished": True, "n": 1,
                                           "head_kind": "parallel"}
    src_copy = tmp_path / "src"
    shutil.copytree(source, src_copy)
    disarm = crash_at(5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_mod.run(_cfg(src_copy, **over), tmp_path / "crashed", quiet=True)
    disarm()
    shutil.rmtree(src_copy)  # a resume reads its own checkpoint, never the source
    resumed = train_mod.resume(tmp_path / "crashed", quiet=True)
    assert resumed["step"] == full["step"] == 6

    def rows(d):
        out = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in out]

    assert rows(tmp_path / "full") == rows(tmp_path / "crashed")
    assert [r["loss_weights"] for r in rows(tmp_path / "full")][-1] == [1.0, 0.25, 0.25]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "crashed" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _one_line_error(capsys, argv, needle):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert needle in err, err


@pytest.mark.parametrize("extra,needle", [
    (["--init-from", "{missing}"], "is not a run folder"),
    (["--init-from", "{no_ckpt}"], "no checkpoint in"),
    (["--init-from", "{corrupt}"], "corrupt or unreadable"),
    (["--init-from", "{src}", "--set", "model.vocab_size=300"], "vocabulary of 257 tokens, this run 300"),
    (["--init-from", "{src}", "--set", "model.d_model=48"], "model.d_model=32, this run 48"),
    (["--init-from", "{src}", "--set", "model.n_heads=4"], "model.n_heads=2, this run 4"),
    (["--init-from", "{src}", "--set", "model.layers=4"], "set model.layers=3"),
    (["--init-from", "{src}", "--head-kind", "linear"], "heads can only be added"),
    (["--init-from", "{src}", "--head-kind", "anticausal"], "anticausal heads read the head after them"),
    (["--init-from", "{src}", "--heads-on-top", "--set", "model.heads_on_top=false"], "would delete trained trunk"),
    (["--init-from", "{src}", "--set", "model.heads_on_top=false"], "would delete trained trunk layers"),
    (["--init-from", "{src}", "--n", "1", "--freeze", "trunk,source_heads"], "leaves nothing to train"),
    (["--init-from", "{whs_src}"], "would drop its trained mixes"),
    (["--init-from", "{src}", "--freeze", "trunk", "--set", "train.head_lr_mult=0"], "nothing would train"),
    (["--freeze", "source_heads"], "needs train.init_from"),
    (["--freeze", "embedding"], "unknown train.freeze group 'embedding'"),
    (["--freeze", "none,trunk"], "'none' cannot be combined"),
    (["--set", "train.init_heads=zeros"], "unknown train.init_heads 'zeros'"),
    (["--set", "train.trunk_lr_mult=-1"], "train.trunk_lr_mult must be a finite number >= 0"),
    (["--set", "train.head_lr_mult=inf"], "train.head_lr_mult must be a finite number >= 0"),
    (["--set", "train.head_lr_mult=nan"], "train.head_lr_mult must be a finite number >= 0"),
    (["--set", "train.head_warmup_steps=-1"], "train.head_warmup_steps must be >= 0"),
    (["--set", "train.loss_weight_anneal_steps=5"], "set both or neither"),
    (["--set", "train.loss_weight_anneal_steps=5", "--set", "train.loss_weights_end=0,0"], "give one value or n-1 = 1"),
    (["--n", "1", "--set", "train.loss_weight_anneal_steps=5", "--set", "train.loss_weights_end=0"], "but n=1"),
])
def test_bad_input_is_one_line_exit_2_and_creates_no_run_folder(tmp_path, capsys, source, extra, needle):
    no_ckpt, corrupt = tmp_path / "no_ckpt", tmp_path / "corrupt"
    for d in (no_ckpt, corrupt):
        d.mkdir()
        shutil.copy(source / "config.json", d / "config.json")
    (corrupt / "checkpoint.pt").write_bytes((source / "checkpoint.pt").read_bytes()[:500])
    whs_src = tmp_path / "whs_src"  # the source's folder, its config claiming weighted hidden states
    shutil.copytree(source, whs_src)
    cfg = json.loads((whs_src / "config.json").read_text())
    cfg["model"]["head_input"] = "weighted"
    (whs_src / "config.json").write_text(json.dumps(cfg))
    paths = {"{missing}": tmp_path / "missing", "{no_ckpt}": no_ckpt, "{corrupt}": corrupt, "{src}": source,
             "{whs_src}": whs_src}
    extra = [str(paths.get(a, a)) for a in extra]
    # n=3 heads on top of the source's 3 layers; without a source, n=2 (parameter-matched, 1 trunk layer)
    n = [] if "--n" in extra else ["--n", "3" if "--init-from" in extra else "2"]
    out = tmp_path / "out" / "run"
    _one_line_error(capsys, ["train", *SRC_FLAGS, *n, *extra, "--out", str(out)], needle)
    assert not (tmp_path / "out").exists()


def test_cli_init_from_adds_heads_and_records_the_source(tmp_path, source, capsys):
    out = tmp_path / "added"
    assert main(["train", *SRC_FLAGS, "--steps", "2", "--n", "2", "--init-from", str(source), "--freeze", "trunk",
                 "--out", str(out)]) == 0
    assert f"init from {source} (step 3, n=1): 1 heads added (copy); frozen: trunk" in capsys.readouterr().out
    stored = json.loads((out / "config.json").read_text())
    assert stored["train"]["freeze"] == ["trunk"] and stored["meta"]["init_from"]["step"] == 3
    a = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(source / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in _trunk(b))


def test_added_heads_decode_identically_to_greedy(tmp_path, source):
    """Self-speculative decoding with heads added after training: token for token the plain greedy output."""
    from lab import speculative

    run_dir = tmp_path / "added"
    train_mod.run(_cfg(source, **{"train.steps": 2, "train.freeze": ("trunk",)}), run_dir, quiet=True)
    _, _, _, model, _ = train_mod.load_run(run_dir)
    model.eval()
    x = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    ref = model.generate(x, 20)
    for heads in (2, 3):
        for fused in (True, False):
            out = speculative.speculative_generate(model, x, 20, heads=heads, fused=fused)
            assert torch.equal(out, ref), (heads, fused)
