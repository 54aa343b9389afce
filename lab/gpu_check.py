"""``mtplab bench gpu``: the first thing to run on a machine with a GPU (a few minutes).

It trains a short run of the real training command on CUDA (bf16 autocast,
fused AdamW) for each variant: n = 1 and 4, eager and with ``--compile``;
then, on a machine with two or more GPUs, the same n = 1 run under
``torchrun --nproc_per_node 2`` (NCCL), whose per-step losses must match the
one-GPU run's. It prints the versions, whether flash attention is usable, and
per variant tokens/s and MFU: model FLOPs (6 per parameter-token for the
blocks and the n unembeddings, plus attention's 12 x layers x d_model x
context) over the GPU's dense bf16 peak, looked up by name or given with
``--peak-tflops``. ``--json FILE`` also writes everything as JSON.

Example:
    $ mtplab bench gpu                      # 10M, 30 steps per variant
    $ mtplab bench gpu --size 100M --steps 50 --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lab.errors import UserError

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a substring of torch.cuda.get_device_name().
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12,
         "RTX 4090": 165e12, "RTX 3090": 71e12}


def add_args(p: argparse.ArgumentParser) -> None:
    """The options of ``mtplab bench gpu``."""
    p.add_argument("--size", default="10M", help="size preset (default 10M)")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per variant (default 30)")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch-tokens", type=int, default=131072, help="tokens per step (default 131072)")
    p.add_argument("--micro-batch", type=int, default=32, help="sequences per forward, all GPUs together (default 32)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the built-in table")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--json", help="also write the results to this JSON file")


def peak_flops(name: str, given_tflops: float | None = None) -> float | None:
    """The device's dense bf16 peak in FLOP/s: ``given_tflops`` if set, else from :data:`PEAKS` by name.

    Example:
        >>> peak_flops("NVIDIA H100 80GB HBM3"), peak_flops("Some GPU"), peak_flops("Some GPU", 100.0)
        (989000000000000.0, None, 100000000000000.0)
    """
    if given_tflops:
        return given_tflops * 1e12
    return next((v for k, v in PEAKS.items() if k in name), None)


def flops_per_token(model: dict, params_non_embedding: int, vocab: int, context: int) -> float:
    """Training FLOPs per token (forward + backward) of a model config (as stored in config.json).

    Example:
        >>> flops_per_token({"d_model": 64, "layers": 2, "n": 1}, 100_000, 50, 128)
        815808.0
    """
    d, layers, n = model["d_model"], model["layers"], model["n"]
    return 6.0 * (params_non_embedding + n * vocab * d) + 12.0 * layers * d * context


def _environment() -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0),
           "gpus": torch.cuda.device_count()}
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=30).stdout.split("\n")[0].strip()
    except (OSError, subprocess.SubprocessError):
        env["driver"] = None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 8, 256, 64, device="cuda", dtype=torch.bfloat16)
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        env["flash_attention"] = True
    except RuntimeError:
        env["flash_attention"] = False
    return env


def _train(args, out: Path, n: int, compile_: bool, procs: int) -> dict:
    """One short training run (a subprocess, under torchrun for procs > 1); its speed and losses."""
    cmd = ["-m", "lab", "train", "--task", "polyarith", "--size", args.size, "--n", str(n), "--steps", str(args.steps),
           "--batch-tokens", str(args.batch_tokens), "--context", str(args.context),
           "--micro-batch", str(args.micro_batch), "--device", "cuda", "--warmup-steps", "5", "--no-progress",
           "--set", "task.train_examples=50000", "--set", "task.test_per_op=20", "--set", "train.marginal_positions=0",
           "--set", f"train.eval_interval={args.steps}", "--set", "train.log_interval=5", "--out", str(out)]
    if compile_:
        cmd.append("--compile")
    if procs > 1:
        cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *cmd]
    t0 = time.time()
    proc = subprocess.run([sys.executable, *cmd], capture_output=True, text=True)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1], "wall_s": round(time.time() - t0, 1)}
    config = json.loads((out / "config.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speed = statistics.median(r["tokens_per_s"] for r in rows[1:] or rows)  # the first interval includes compiling
    flops = flops_per_token(config["model"], config["meta"]["params"]["non_embedding"], config["meta"]["vocab_size"],
                            args.context)
    return {"tokens_per_s": speed, "flops_per_token": flops, "losses": [r["loss"] for r in rows],
            "wall_s": round(time.time() - t0, 1), "params": config["meta"]["params"]["total"]}


def main(args) -> int:
    """Run the check; print a table (and write ``--json``). Exit status 1 if a run failed or 2 GPUs disagree."""
    if not torch.cuda.is_available():
        raise UserError("bench gpu needs a CUDA GPU and there is none here (torch.cuda.is_available() is False)")
    env = _environment()
    peak = peak_flops(env["device"], args.peak_tflops)
    print(" ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    variants = [(n, c, 1) for n in (1, 4) for c in ((False,) if args.no_compile else (False, True))]
    if env["gpus"] >= 2:
        variants.append((1, False, 2))
    results, ok = [], True
    print(f"{'size':<6}{'n':>3}{'compile':>9}{'GPUs':>6}{'tokens/s':>13}{'MFU':>8}{'last loss':>11}{'wall s':>8}")
    with tempfile.TemporaryDirectory(prefix="mtplab-gpu-check-") as tmp:
        for i, (n, compile_, procs) in enumerate(variants):
            r = {"size": args.size, "n": n, "compile": compile_, "gpus": procs,
                 **_train(args, Path(tmp) / f"run{i}", n, compile_, procs)}
            if "error" in r:
                ok = False
                print(f"{args.size:<6}{n:>3}{str(compile_):>9}{procs:>6}  failed: {r['error']}", flush=True)
            else:
                # MFU per GPU: the job's tokens/s shared by its GPUs
                r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / (peak * procs) if peak else None
                mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
                print(f"{args.size:<6}{n:>3}{str(compile_):>9}{procs:>6}{r['tokens_per_s']:>13,.0f}{mfu:>8}"
                      f"{r['losses'][-1]:>11.4f}{r['wall_s']:>8.1f}", flush=True)
            results.append(r)
    one = next((r for r in results if r["gpus"] == 1 and r["n"] == 1 and not r["compile"] and "losses" in r), None)
    two = next((r for r in results if r["gpus"] == 2 and "losses" in r), None)
    if one and two:
        diff = max(abs(a - b) / abs(a) for a, b in zip(one["losses"], two["losses"]))
        same = diff < 2e-2  # bf16 matmuls reduce in another order on 2 GPUs
        ok &= same
        print(f"2 GPUs vs 1: per-step losses within {100 * diff:.2f}% ({'ok' if same else 'MISMATCH: over 2%'})")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "peak_flops": peak, "results": results}, indent=2))
    return 0 if ok else 1
