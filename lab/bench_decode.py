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
from lab.speculative import DecodeStats, check_heads, pad_after_stop, speculative_generate


@torch.inference_mode()
def bench_decode(model, prompts: list[list[int]], max_new_tokens: int, *, stop_token: int | None = None,
                 batch_size: int = 1, heads: list[int] | None = None, repeats: int = 3,
                 fused: bool = True) -> dict:
    """Time plain greedy (``model.generate``) and speculative decoding with k = 1..n heads on the same prompts.

    Prompts of one length are decoded together, up to ``batch_size`` rows
    (``lab.decode.length_batches``, the batches ``model.generate`` can take;
    in a speculative batch every row advances on its own). Each method
    decodes every prompt ``repeats`` times (methods interleaved, so background
    load hits them alike) and keeps its fastest pass. Returns
    ``{"greedy": {...}, "k": {k: {...}}}`` with tokens/s, seconds, tokens per
    forward, per-head acceptance, speed-up and whether the output was
    identical to greedy decoding. Tokens are counted up to each row's stop
    token, for both methods.

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
            results[k] = all(torch.equal(a, pad_after_stop(b, stop_token)) for a, b in zip(outs, reference))
    lengths = [row_lengths(t, stop_token) for t in reference]  # new tokens of each row, per batch
    tokens = sum(map(sum, lengths))
    greedy = {"seconds": best["greedy"], "tokens": tokens, "tokens_per_s": tokens / best["greedy"]}
    table = {}
    for k in ks:
        s = stats_of[k]
        table[k] = {"seconds": best[k], "tokens": s.tokens, "tokens_per_s": s.tokens / best[k],
                    "speedup": best["greedy"] / best[k], "tokens_per_forward": s.tokens_per_forward,
                    "forwards": s.forwards, "acceptance": s.acceptance(), "identical": results[k],
                    **decode_ceilings(lengths, k)}

    def clock():
        sync()
        return time.perf_counter()

    for k in ks:  # one more pass, each part of the loop timed (a GPU synced at every part: not in the speeds above)
        s = DecodeStats(clock=clock)
        spec_pass(k, s)
        table[k]["profile"] = step_profile(s, best["greedy"] / tokens, table[k]["speedup"])
    return {"greedy": greedy, "k": table, "prompts": len(prompts), "batches": len(batches),
            "batch_size": batch_size, "rows_per_batch": len(prompts) / len(batches), "max_new_tokens": max_new_tokens, "stop_token": stop_token,
            "device": str(device), "head_kind": model.config.head_kind, "n": model.config.n}


def step_profile(stats: DecodeStats, greedy_seconds_per_token: float, speedup: float) -> dict[str, float]:
    """Where a verification step's time goes, from a timed pass (``DecodeStats.clock`` set), in ms per step.

    ``verify_ms``: the forward over the block; ``draft_ms``: making the next
    drafts (``engine.accept``: for sequential heads, one module pass per
    depth); ``other_ms``: the loop's own bookkeeping. ``verify_per_greedy``
    is a verification forward's cost in plain greedy steps (greedy decoding's
    time per token); ``speedup_free_drafting`` the measured speed-up were the
    drafting free (its share of the loop removed), a bound on what a faster
    drafter could give.

    Example:
        >>> s = DecodeStats(forwards=10)
        >>> s.seconds.update(prefill=0.001, verify=0.010, draft=0.008, loop=0.020)
        >>> step_profile(s, 0.0007, 0.9)
        {'verify_ms': 1.0, 'draft_ms': 0.8, 'other_ms': 0.1, 'verify_per_greedy': 1.43, 'speedup_free_drafting': 1.5}
    """
    t, steps = stats.seconds, max(1, stats.forwards)
    other = t["loop"] - t["prefill"] - t["verify"] - t["draft"]
    share = t["draft"] / t["loop"] if t["loop"] else 0.0
    return {"verify_ms": round(1e3 * t["verify"] / steps, 3), "draft_ms": round(1e3 * t["draft"] / steps, 3),
            "other_ms": round(1e3 * other / steps, 3),
            "verify_per_greedy": round(t["verify"] / steps / greedy_seconds_per_token, 2),
            "speedup_free_drafting": round(speedup / (1 - share), 2) if share < 1 else float("inf")}


def row_lengths(tokens: torch.Tensor, stop_token: int | None) -> list[int]:
    """New tokens of each row of a (B, L) output, up to and including its first stop token.

    Example:
        >>> row_lengths(torch.tensor([[1, 9, 2], [3, 4, 5]]), 9), row_lengths(torch.tensor([[1, 2]]), None)
        ([2, 3], [2])
    """
    B, L = tokens.shape
    if stop_token is None:
        return [L] * B
    hit = tokens == stop_token
    return torch.where(hit.any(dim=1), hit.long().argmax(dim=1) + 1, L).tolist()


def decode_ceilings(lengths: list, k: int) -> dict[str, float]:
    """What k heads could reach at best on outputs of these lengths (every draft accepted).

    ``lengths``: per call (batch), the output length of each of its rows, a
    list of ints; or an int for a call of one row. A row that emits L tokens
    gets the first from the prefill and needs at least ceil((L - 1) / k) more
    forwards, against L forwards in all for plain greedy decoding. A batch
    takes as many forwards as its longest row, with either method.
    ``max_tokens_per_forward`` is the best tokens per forward of a row and
    ``max_speedup`` the best speed-up if every forward cost the same (prefill
    included). Short outputs cap both, whatever the model or hardware.

    Example:
        >>> decode_ceilings([6], 4)    # a polyarith answer: 5 digits and end-of-text
        {'max_tokens_per_forward': 2.5, 'max_speedup': 2.0}
        >>> decode_ceilings([201], 4)
        {'max_tokens_per_forward': 4.0, 'max_speedup': 3.94}
        >>> decode_ceilings([[6, 9]], 4)  # one batch of two rows: (5 + 8) tokens in (2 + 2) row forwards; 9 against 1 + 2
        {'max_tokens_per_forward': 3.25, 'max_speedup': 3.0}
    """
    batches = [L if isinstance(L, list) else [L] for L in lengths]
    after = sum(max(0, L - 1) for b in batches for L in b)
    verify = [[-(-max(0, L - 1) // k) for L in b] for b in batches]  # forwards after the prefill, per row
    rows = sum(map(sum, verify))
    calls = sum(1 + max(v, default=0) for v in verify)
    return {"max_tokens_per_forward": round(after / rows, 2) if rows else 1.0,
            "max_speedup": round(sum(max(b, default=0) for b in batches) / calls, 2) if batches else 1.0}


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
    rows = f" ({result['rows_per_batch']:.1f} rows per batch)" if result.get("rows_per_batch", 1) != 1 else ""
    lines = [f"{workload}{result['prompts']} prompts, batch size {result['batch_size']}{rows}, "
             f"up to {result['max_new_tokens']} new tokens"
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
    profiled = {k: r["profile"] for k, r in result["k"].items() if "profile" in r}
    if profiled:
        greedy_ms = 1e3 * result["greedy"]["seconds"] / max(1, result["greedy"]["tokens"])
        lines.append(f"where a step's time goes (ms per verification step; plain greedy: {greedy_ms:.3f} ms per token):")
        lines.append("k    verify  drafting     other  verify/greedy step  speed-up if drafting were free")
        for k, p in profiled.items():
            lines.append(f"{k:<2} {p['verify_ms']:>8.3f}  {p['draft_ms']:>8.3f}  {p['other_ms']:>8.3f}  "
                         f"{p['verify_per_greedy']:>17.2f}x  {p['speedup_free_drafting']:>29.2f}x")
    return "\n".join(lines)


def bench_decode_batch_sizes(model, prompts: list[list[int]], max_new_tokens: int, *, batch_sizes: list[int],
                             **kwargs) -> dict:
    """:func:`bench_decode` at each batch size: ``{"batch_sizes": [...], "by_batch_size": {size: result}}``.

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=20).resolved())
        >>> r = bench_decode_batch_sizes(m, [[1, 2, 3], [4, 5, 6]], 5, batch_sizes=[1, 2], repeats=1)
        >>> sorted(r["by_batch_size"]), r["by_batch_size"][2]["batches"]
        ([1, 2], 1)
    """
    return {"batch_sizes": list(batch_sizes),
            "by_batch_size": {b: bench_decode(model, prompts, max_new_tokens, batch_size=b, **kwargs)
                              for b in batch_sizes}}


def format_batch_sizes(result: dict) -> str:
    """Tokens/s (and the speed-up over plain greedy decoding) of every method, one column per batch size.

    Example:
        >>> one = {"greedy": {"tokens_per_s": 100.0}, "rows_per_batch": 1.0, "prompts": 2, "max_new_tokens": 6,
        ...        "stop_token": None, "head_kind": "linear", "n": 2, "device": "cpu",
        ...        "k": {2: {"tokens_per_s": 150.0, "speedup": 1.5, "tokens_per_forward": 1.6, "identical": True}}}
        >>> print(format_batch_sizes({"batch_sizes": [1], "by_batch_size": {1: one}}))  # doctest: +NORMALIZE_WHITESPACE
        2 prompts, up to 6 new tokens (no stop token); linear heads n=2; device cpu
        tokens/s (speed-up over plain greedy) by batch size; rows per batch 1.0
        method              batch 1
        plain greedy            100
        k=2               150 1.50x
        tokens/fwd k=2         1.60
        identical to plain greedy decoding: yes
    """
    sizes = result["batch_sizes"]
    runs = [result["by_batch_size"][b] for b in sizes]
    first = runs[0]
    workload = {"continue": f"continue held-out texts ({first.get('prompt_tokens')}-token prompts); ",
                "answers": "answers to test prompts; "}.get(first.get("mode"), "")
    stop = "(stop at the answer end)" if first["stop_token"] is not None else "(no stop token)"
    lines = [f"{workload}{first['prompts']} prompts, up to {first['max_new_tokens']} new tokens {stop}; "
             f"{first['head_kind']} heads n={first['n']}; device {first['device']}",
             "tokens/s (speed-up over plain greedy) by batch size; rows per batch "
             + ", ".join(f"{r['rows_per_batch']:.1f}" for r in runs),
             f"{'method':<14}" + "".join(f"{'batch ' + str(b):>14}" for b in sizes),
             f"{'plain greedy':<14}" + "".join(f"{r['greedy']['tokens_per_s']:>14,.0f}" for r in runs)]
    for k in first["k"]:
        lines.append(f"{'k=' + str(k):<14}" + "".join(
            f"{r['k'][k]['tokens_per_s']:>8,.0f} {r['k'][k]['speedup']:>4.2f}x" for r in runs))
    for k in first["k"]:
        if k > 1:
            lines.append(f"{'tokens/fwd k=' + str(k):<14}"
                         + "".join(f"{r['k'][k]['tokens_per_forward']:>14.2f}" for r in runs))
    same = all(v["identical"] for r in runs for v in r["k"].values())
    lines.append(f"identical to plain greedy decoding: {'yes' if same else 'NO'}")
    return "\n".join(lines)
