"""``mtplab bench decode``: self-speculative against plain greedy decoding, timed, on a run's test prompts.

Beside ``lab.bench`` (``mtplab bench train``, the training step): here the
decoding loop of ``lab.speculative`` is timed against ``MTPModel.generate``
in this process, with the tokens per forward and per-head acceptance that
explain the speed-up, and the ceiling that the output lengths put on both.
The command (argument checks, loading the run) is in ``lab.speculative_cli``.
"""

from __future__ import annotations

import time

import torch

from lab.decode import length_batches
from lab.speculative import DecodeStats, check_heads, speculative_generate


@torch.no_grad()
def bench_decode(model, prompts: list[list[int]], max_new_tokens: int, *, stop_token: int | None = None,
                 batch_size: int = 1, heads: list[int] | None = None, repeats: int = 3,
                 fused: bool = True) -> dict:
    """Time plain greedy (``model.generate``) and speculative decoding with k = 1..n heads on the same prompts.

    Each method decodes every prompt ``repeats`` times (methods interleaved,
    so background load hits them alike) and keeps its fastest pass. Returns
    ``{"greedy": {...}, "k": {k: {...}}}`` with tokens/s, seconds, tokens per
    forward, per-head acceptance, speed-up and whether the output was
    identical to greedy decoding.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> r = bench_decode(m, [[1, 2, 3], [4, 5, 6]], 5, repeats=1)
        >>> sorted(r["k"]), r["k"][2]["identical"]
        ([1, 2], True)
    """
    model.eval()
    device = next(model.parameters()).device
    batches = [x for _, x in length_batches(prompts, batch_size, device)]
    ks = heads or list(range(1, model.config.n + 1))
    for k in ks:
        check_heads(model, k)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def greedy_pass():
        return [model.generate(x, max_new_tokens, stop_token=stop_token) for x in batches]

    def spec_pass(k, stats):
        return [speculative_generate(model, x, max_new_tokens, heads=k, stop_token=stop_token, stats=stats,
                                     fused=fused) for x in batches]

    # warm-up (allocator, kernels), untimed
    for x in batches[:2]:
        model.generate(x, max_new_tokens, stop_token=stop_token)
        for k in ks:
            speculative_generate(model, x, max_new_tokens, heads=k, stop_token=stop_token, fused=fused)
    best = {"greedy": float("inf"), **{k: float("inf") for k in ks}}
    reference, results, stats_of = None, {}, {}
    for _ in range(max(1, repeats)):
        sync()
        t0 = time.perf_counter()
        reference = greedy_pass()
        sync()
        best["greedy"] = min(best["greedy"], time.perf_counter() - t0)
        for k in ks:
            stats = DecodeStats()
            sync()
            t0 = time.perf_counter()
            outs = spec_pass(k, stats)
            sync()
            best[k] = min(best[k], time.perf_counter() - t0)
            stats_of[k] = stats
            results[k] = all(torch.equal(a, b) for a, b in zip(outs, reference))
    tokens = sum(t.numel() for t in reference)
    greedy = {"seconds": best["greedy"], "tokens": tokens, "tokens_per_s": tokens / best["greedy"]}
    lengths = [t.shape[1] for t in reference]  # new tokens of each batch
    table = {}
    for k in ks:
        s = stats_of[k]
        table[k] = {"seconds": best[k], "tokens": s.tokens, "tokens_per_s": s.tokens / best[k],
                    "speedup": best["greedy"] / best[k], "tokens_per_forward": s.tokens_per_forward,
                    "forwards": s.forwards, "acceptance": s.acceptance(), "identical": results[k],
                    **decode_ceilings(lengths, k)}
    return {"greedy": greedy, "k": table, "prompts": len(prompts), "batches": len(batches),
            "batch_size": batch_size, "max_new_tokens": max_new_tokens, "stop_token": stop_token,
            "device": str(device), "head_kind": model.config.head_kind, "n": model.config.n}


def decode_ceilings(lengths: list[int], k: int) -> dict[str, float]:
    """What k heads could reach at best on outputs of these lengths (every draft accepted).

    A call that emits L tokens gets the first from the prefill and needs at
    least ceil((L - 1) / k) more forwards, against L forwards in all for plain
    greedy decoding. ``max_tokens_per_forward`` is the best tokens per forward
    and ``max_speedup`` the best speed-up if every forward cost the same
    (prefill included). Short outputs cap both, whatever the model or hardware.

    Example:
        >>> decode_ceilings([6], 4)    # a polyarith answer: 5 digits and end-of-text
        {'max_tokens_per_forward': 2.5, 'max_speedup': 2.0}
        >>> decode_ceilings([201], 4)
        {'max_tokens_per_forward': 4.0, 'max_speedup': 3.94}
    """
    after = sum(max(0, L - 1) for L in lengths)
    verify = sum(-(-max(0, L - 1) // k) for L in lengths)
    return {"max_tokens_per_forward": round(after / verify, 2) if verify else 1.0,
            "max_speedup": round(sum(lengths) / (len(lengths) + verify), 2) if lengths else 1.0}


def format_bench(result: dict) -> str:
    """The bench table as text, with the paper's reference numbers beside it.

    Example:
        >>> r = {"greedy": {"tokens_per_s": 100.0, "seconds": 1.0, "tokens": 100}, "n": 2, "prompts": 1,
        ...      "batch_size": 1, "max_new_tokens": 6, "head_kind": "parallel", "device": "cpu", "stop_token": 10,
        ...      "k": {2: {"tokens_per_forward": 1.5, "acceptance": {2: 0.5}, "tokens_per_s": 140.0,
        ...                "speedup": 1.4, "identical": True, "max_tokens_per_forward": 1.67, "max_speedup": 1.5}}}
        >>> print(format_bench(r).splitlines()[2])
        k  tokens/fwd  acc h2  tokens/s  speedup  identical  ceiling: tokens/fwd  speedup
    """
    n = result["n"]
    heads = list(range(2, n + 1))
    workload = {"continue": f"continue held-out texts ({result.get('prompt_tokens')}-token prompts); ",
                "answers": "answers to test prompts; "}.get(result.get("mode"), "")
    lines = [f"{workload}{result['prompts']} prompts, batch size {result['batch_size']}, up to {result['max_new_tokens']} new tokens"
             f" {'(stop at the answer end)' if result['stop_token'] is not None else '(no stop token)'}; "
             f"{result['head_kind']} heads n={n}; device {result['device']}",
             f"plain greedy (MTPModel.generate, KV cache): {result['greedy']['tokens_per_s']:,.0f} tokens/s",
             "k  tokens/fwd  " + "  ".join(f"acc h{j}" for j in heads) + "  tokens/s  speedup  identical"
             "  ceiling: tokens/fwd  speedup"]
    for k, r in result["k"].items():
        acc = "  ".join(f"{100 * r['acceptance'][j]:5.1f}%" if j in r["acceptance"] else "     - "
                        for j in heads)
        lines.append(f"{k:<2} {r['tokens_per_forward']:>10.2f}  {acc}  {r['tokens_per_s']:>8,.0f}  "
                     f"{r['speedup']:>6.2f}x  {'yes' if r['identical'] else 'NO ':<9}"
                     f"  {r['max_tokens_per_forward']:>19.2f}  {r['max_speedup']:>6.2f}x")
    lines.append("ceiling: every draft accepted and every forward equally costly (the output lengths cap it)")
    lines.append("paper (7B, n=4, code): 3.50 tokens/forward, 3.05x speed-up")
    return "\n".join(lines)
