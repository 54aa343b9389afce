"""``mtplab bench train``: tokens/s and peak memory of the MTP training step.

For n in {1, 2, 4} (those that fit the size's layers) it measures one full
training step (forward, backward, AdamW) with the memory-efficient
sequential backward and with the naive summed loss, plus nanoGPT's model
(karpathy/nanoGPT's GPT with bias=False and dropout 0: learned absolute
positions, tied embedding and unembedding, its attention and MLP; written
here, not imported) of the same shape (d_model, layers, heads, vocabulary,
context) as the reference for our n=1 throughput. Each variant runs in its own
subprocess so that its peak memory is its own: on CUDA the allocator's peak
(``torch.cuda.max_memory_allocated``), on CPU the process's peak resident
memory (``ru_maxrss``), both minus the memory held just before the first
step (weights, optimizer state, data). Then it prints the ratios the issue
sets targets for.

Example:
    $ mtplab bench train --size 1M --vocab 320,32768 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.errors import UserError


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="1M,10M", help="comma-separated size presets (default 1M,10M)")
    p.add_argument("--vocab", default="320,32768", help="comma-separated vocabulary sizes (default 320,32768)")
    p.add_argument("--ns", default="1,2,4", help="numbers of heads to compare (default 1,2,4)")
    p.add_argument("--head-kind", default="parallel")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--json", help="also write all results to this JSON file")
    p.add_argument("--profile", action="store_true",
                   help="also profile each variant's timed steps (torch.profiler) and print where our n=1 step and "
                        "nanoGPT's differ, operator by operator")
    p.add_argument("--worker", help=argparse.SUPPRESS)


# ---------------- the reference: nanoGPT's model as published ----------------

class _RefBlock(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (t.view(B, T, self.h, d // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class _RefGPT(nn.Module):
    """nanoGPT's GPT (bias=False, dropout 0): learned positions, bias-free LayerNorm, tied unembedding.

    Ours differs: RoPE instead of learned positions and an untied
    unembedding (lab.model); the benchmark's ratio prices those choices too.
    """

    def __init__(self, vocab, d, layers, heads, context):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(_RefBlock(d, heads) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(d, bias=False), nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied, as in nanoGPT (weight tying)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


# ---------------- one variant, in its own process ----------------

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _worker(spec: dict) -> dict:
    from lab.config import ModelConfig
    from lab.loss import naive_backward, sequential_backward
    from lab.model import MTPModel
    from lab.train import autocast_for, select_device

    torch.manual_seed(0)
    device = select_device(spec["device"])
    mc = ModelConfig(size=spec["size"], n=spec["n"], head_kind=spec["head_kind"], vocab_size=spec["vocab"]).resolved()
    B, T, n = spec["batch"], spec["context"], spec["n"]
    if spec["variant"] == "nanogpt":
        model = _RefGPT(spec["vocab"], mc.d_model, mc.layers, mc.n_heads, T).to(device)
    else:
        model = MTPModel(mc).to(device)
    if spec["compile"]:
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda")
    autocast = autocast_for(device, "auto")
    window = torch.randint(0, spec["vocab"], (B, T + n), device=device)
    step_fn = {"sequential": sequential_backward, "naive": naive_backward}.get(spec["variant"])

    def step():
        if step_fn is None:
            with autocast():
                loss = model(window[:, :T], window[:, 1:T + 1])
            loss.backward()
        else:
            step_fn(model, window, autocast=autocast, track_accuracy=False)  # as on non-logging steps
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    # Optimizer state exists after the first step; the baseline is taken after it.
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    for _ in range(spec["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    dt = (time.perf_counter() - t0) / spec["steps"]
    ops = _profile(step, spec["steps"], device) if spec.get("profile") else {}
    counts = (model.param_counts() if hasattr(model, "param_counts")
              else {"total": sum(p.numel() for p in model.parameters())})
    return {**spec, "step_ms": dt * 1000, "tokens_per_s": B * T / dt, "peak_mib": max(peak, 0) / 2**20,
            "params": counts, "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "ops_ms": ops}


def _profile(step, steps: int, device) -> dict[str, float]:
    """Milliseconds per step spent in each operator (self time: an op's children are not counted twice)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    out = {}
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us > 0:
            out[e.key] = us / steps / 1000
    return out


def op_differences(ours: dict[str, float], ref: dict[str, float], top: int = 12) -> list[tuple[str, float, float]]:
    """The operators whose time per step differs most between two profiles: (name, ours ms, reference ms).

    Example:
        >>> op_differences({"aten::mm": 5.0, "aten::mul": 3.0}, {"aten::mm": 5.1, "aten::add": 1.0}, top=2)
        [('aten::mul', 3.0, 0.0), ('aten::add', 0.0, 1.0)]
    """
    names = set(ours) | set(ref)
    rows = [(k, ours.get(k, 0.0), ref.get(k, 0.0)) for k in names]
    return sorted(rows, key=lambda r: -abs(r[1] - r[2]))[:top]


def _run_worker(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "lab.bench", "--worker", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker failed for {spec}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mfu(r: dict) -> float | None:
    """Model FLOPs utilisation against bf16 dense peak, on H100/H200 only."""
    peaks = {"H100": 989e12, "H200": 989e12}
    peak = next((v for k, v in peaks.items() if k in r["device_name"]), None)
    if peak is None:
        return None
    p = r["params"]["total"]
    flops_per_token = 6 * p  # forward + backward, weights only (attention excluded: a floor)
    return r["tokens_per_s"] * flops_per_token / peak


def main(args) -> int:
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    from lab.config import SIZES

    def ints(text, what):
        try:
            return [int(float(x)) for x in text.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--{what} expects comma-separated integers, got '{text}'") from None

    sizes = [s.strip() for s in args.size.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            raise UserError(f"unknown size '{s}'; choose from {', '.join(SIZES)}")
    vocabs, ns = ints(args.vocab, "vocab"), ints(args.ns, "ns")
    if min(vocabs + ns) < 1 or args.steps < 1 or args.batch < 1 or args.context < 2:
        raise UserError("--vocab, --ns, --steps, --batch must be positive and --context >= 2")
    from lab.train import select_device

    device = str(select_device(args.device))
    results = []
    print(f"bench train: device {device}, batch {args.batch} x context {args.context} = "
          f"{args.batch * args.context} tokens/step, {args.steps} timed steps after {args.warmup + 1} warmup")
    header = f"{'size':<6}{'vocab':>7}{'n':>3}  {'variant':<11}{'params':>11}{'ms/step':>10}{'tokens/s':>11}{'peak MiB':>10}{'MFU':>7}"
    print(header)
    print("-" * len(header))
    for size in sizes:
        L = SIZES[size][1]
        for vocab in vocabs:
            base = dict(size=size, vocab=vocab, head_kind=args.head_kind, context=args.context, batch=args.batch,
                        steps=args.steps, warmup=args.warmup, device=device, compile=args.compile,
                        profile=args.profile)
            specs = [dict(base, n=1, variant="nanogpt")]
            for n in ns:
                if n > L - 1:
                    print(f"{size:<6}{vocab:>7}{n:>3}  (skipped: {L} layers cannot be parameter-matched for n={n})")
                    continue
                specs += [dict(base, n=n, variant="sequential"), dict(base, n=n, variant="naive")]
            for spec in specs:
                r = _run_worker(spec)
                results.append(r)
                mfu = _mfu(r)
                print(f"{size:<6}{vocab:>7}{r['n']:>3}  {r['variant']:<11}{r['params']['total']:>11,}"
                      f"{r['step_ms']:>10.1f}{r['tokens_per_s']:>11,.0f}{r['peak_mib']:>10.1f}"
                      f"{(f'{100 * mfu:.1f}%' if mfu is not None else '-'):>7}", flush=True)
    print()
    print("ratios (same run):")

    def find(size, vocab, n, variant):
        return next((r for r in results if (r["size"], r["vocab"], r["n"], r["variant"]) == (size, vocab, n, variant)), None)

    for size in sizes:
        for vocab in vocabs:
            s1, ref = find(size, vocab, 1, "sequential"), find(size, vocab, 1, "nanogpt")
            if s1 and ref:
                print(f"  {size} V={vocab}: our n=1 tokens/s / nanoGPT = {s1['tokens_per_s'] / ref['tokens_per_s']:.2f}"
                      f"  (target >= 1.00)")
            for n in ns:
                sn, nn_ = find(size, vocab, n, "sequential"), find(size, vocab, n, "naive")
                if n == 1 or not (s1 and sn):
                    continue
                mem = sn["peak_mib"] / max(s1["peak_mib"], 1e-9)
                naive_mem = nn_["peak_mib"] / max(s1["peak_mib"], 1e-9) if nn_ else float("nan")
                print(f"  {size} V={vocab}: n={n}/n=1 step time {sn['step_ms'] / s1['step_ms']:.2f}"
                      f"{'  (target <= 1.15 at small V)' if n == 4 else ''}; peak memory sequential {mem:.2f}"
                      f"{'  (target <= 1.05 at 32k)' if n == 4 else ''}, naive {naive_mem:.2f}")
    if args.profile:
        _print_profiles(sizes, vocabs, find)
    if args.json:
        from lab.paths import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2))  # the path was checked before the benchmark
    return 0


def _print_profiles(sizes, vocabs, find) -> None:
    """Where our n=1 step and nanoGPT's spend different time (the profiled steps; profiling adds overhead)."""
    for size in sizes:
        for vocab in vocabs:
            ours, ref = find(size, vocab, 1, "sequential"), find(size, vocab, 1, "nanogpt")
            if not (ours and ref and ours["ops_ms"] and ref["ops_ms"]):
                continue
            a, b = sum(ours["ops_ms"].values()), sum(ref["ops_ms"].values())
            print(f"\nprofile {size} V={vocab}, ms per step by operator (self time): ours n=1 {a:.1f}, nanoGPT {b:.1f}, "
                  f"difference {a - b:+.1f}; the operators that differ most:")
            print(f"  {'operator':<44}{'ours':>8}{'nanoGPT':>9}{'diff':>8}")
            for name, x, y in op_differences(ours["ops_ms"], ref["ops_ms"]):
                print(f"  {name[:43]:<44}{x:>8.2f}{y:>9.2f}{x - y:>+8.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_train_args(p)
    raise SystemExit(main(p.parse_args()))
