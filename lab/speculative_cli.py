"""``mtplab decode`` and ``mtplab bench decode``: self-speculative decoding from the command line.

``lab.cli`` adds both with :func:`add_parser`. Decoding itself is
``lab.speculative``, the benchmark ``lab.bench_decode``.

Example:
    $ mtplab decode runs/x --prompt "(10000+20000)=" --heads 4
    $ mtplab decode runs/x --prompts-file prompts.txt --max-new-tokens 100 --no-stop
    $ mtplab bench decode runs/x
    $ mtplab bench decode runs/x --max-new-tokens 200 --limit 50
    $ mtplab bench decode runs/x --batch-size 1,4,16
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lab.decode import DECODE_MODES
from lab.errors import UserError
from lab.paths import atomic_write_text, check_output_file


def _formatter(prog):
    import argparse

    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_parser(sub, bench_sub) -> None:
    """Add ``decode`` to the ``mtplab`` subcommands and ``decode`` to ``mtplab bench``.

    Example:
        >>> import argparse
        >>> p = argparse.ArgumentParser(); sub = p.add_subparsers(); b = sub.add_parser("bench").add_subparsers()
        >>> add_parser(sub, b)
        >>> p.parse_args(["decode", "runs/x", "--prompt", "1+1=", "--heads", "2"]).heads
        2
    """
    s = sub.add_parser(
        "decode", help="greedy decoding sped up by the extra heads (self-speculative)", formatter_class=_formatter,
        description="Greedy blockwise self-speculative decoding: heads 2..k draft, head 1 verifies, with a KV cache.\n"
                    "The output is token for token the plain greedy output. Prints one line per prompt\n"
                    "(the new text, newlines shown as \\n) and a summary on stderr.",
        epilog="examples:\n  mtplab decode runs/x --prompt \"(10000+20000)=\"\n"
               "  mtplab decode runs/x --prompt \"-12345=\" --prompt \"(1+2)=\" --heads 2\n"
               "  mtplab decode runs/x --prompts-file prompts.txt --max-new-tokens 200 --no-stop --check")
    s.add_argument("run", help="run folder (mtplab train --out ...), trained with n >= 2")
    s.add_argument("--prompt", action="append", default=[],
                   help="prompt text (repeat for a batch); a text may start with one '-', e.g. --prompt -12345=")
    s.add_argument("--prompts-file", help="a text file with one prompt per line")
    s.add_argument("--heads", type=int, help="k: heads used (1 = plain greedy; default: all n)")
    s.add_argument("--max-new-tokens", type=int, default=64, help="new tokens per prompt at most (default 64)")
    s.add_argument("--stop", help="stop after this text (one token; default: the task's answer end, \\n for polyarith; "
                   "the end-of-text token for tasks whose texts are continued, as induction's stories)")
    s.add_argument("--no-stop", action="store_true", help="never stop early: always decode --max-new-tokens")
    s.add_argument("--no-eot", action="store_true",
                   help="do not put the end-of-text token before each prompt (the tasks' evaluation does)")
    s.add_argument("--batch-size", type=int, default=64, help="prompts of one length decoded together (default 64)")
    s.add_argument("--device", help="auto | cpu | cuda (default: the run's)")
    s.add_argument("--check", action="store_true", help="also decode plainly and check the outputs are identical")
    s.set_defaults(func=cmd_decode)

    b = bench_sub.add_parser(
        "decode", help="speculative vs plain greedy decoding: tokens/forward, acceptance, tokens/s",
        formatter_class=_formatter,
        description="Decodes the run's held-out prompts with plain greedy decoding (MTPModel.generate, KV cache)\n"
                    "and with k = 1..n heads, on this machine in this process, and prints for each k: tokens per\n"
                    "forward (after the prefill), the acceptance rate of each draft head (given the earlier drafts\n"
                    "were accepted), tokens/s and the speed-up over plain greedy decoding.\n"
                    "The workload is the task's own (its decode_mode): 'answers' decodes each test prompt's answer\n"
                    "as the evaluation does, stopping at its end (polyarith: about 6 tokens, which caps any\n"
                    "speed-up; the ceilings are printed); 'continue' takes the first --prompt-tokens tokens of\n"
                    "each held-out text and decodes --max-new-tokens more with no stop (induction: 32 + 96 at a\n"
                    "context of 128, 128 + 256 at 512, always within the context).\n"
                    "--batch-size 1,4,16 runs it at each batch size and prints tokens/s side by side (prompts of one\n"
                    "length are batched together; in a speculative batch every row advances on its own).",
        epilog="examples:\n  mtplab bench decode runs/x\n  mtplab bench decode runs/x --mode continue --prompt-tokens 32 "
               "--max-new-tokens 96\n  mtplab bench decode runs/x --batch-size 8 --heads 1,4 --json bench.json\n"
               "  mtplab bench decode runs/x --batch-size 1,4,16 --heads 1,4")
    b.add_argument("run")
    b.add_argument("--heads", help="comma-separated k values (default 1..n)")
    b.add_argument("--limit", type=int, default=100, help="test prompts used, spread over the test set (0: all; default 100)")
    b.add_argument("--batch-size", default="1",
                   help="prompts decoded together; comma-separated for several, side by side (default 1)")
    b.add_argument("--mode", choices=DECODE_MODES, help="answers | continue (default: the task's decode_mode)")
    b.add_argument("--prompt-tokens", type=int, default=0,
                   help="continue: prompt length in tokens (default min(128, context/4))")
    b.add_argument("--max-new-tokens", type=int, default=0,
                   help="decode this many tokens per prompt with no stop (default: answers: the answer, stopping at "
                        "its end; continue: min(256, context - prompt))")
    b.add_argument("--repeats", type=int, default=3, help="timed passes per method; the fastest counts (default 3)")
    b.add_argument("--device", help="auto | cpu | cuda (default: the run's)")
    b.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    b.add_argument("--unfused", action="store_true", help="run parallel/linear heads one by one (no batched heads)")
    b.add_argument("--json", help="also write the results to this JSON file")
    b.set_defaults(func=cmd_bench_decode)


def _load(run: str, device: str | None):
    from lab.train import load_run, select_device

    dev = select_device(device) if device else None
    config, task, data, model, state = load_run(Path(run), dev)
    model.eval()
    if model.config.n < 2:
        raise UserError(f"{run} was trained with n=1: it has no extra heads to draft with "
                        "(train with --n 2 or more for speculative decoding)")
    return config, task, data, model


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")
    return value


def _int_list(name: str, text: str) -> list[int]:
    """Comma-separated positive integers, e.g. ``--batch-size 1,4,16``; UserError otherwise.

    Example:
        >>> _int_list("--heads", "1, 4")
        [1, 4]
    """
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{name} expects comma-separated integers, got '{text}'") from None
    if not values:
        raise UserError(f"{name} is empty")
    for v in values:
        _positive(name, v)
    return values


def _stop_token(args, task, data) -> int | None:
    from lab.decode import task_prompts

    if args.no_stop:
        return None
    if args.stop is not None:
        ids = data.enc.encode_ordinary(args.stop)
        if len(ids) != 1:
            raise UserError(f"--stop must be exactly one token; {args.stop!r} is {len(ids)} tokens")
        return ids[0]
    if getattr(task, "decode_mode", "answers") == "continue":
        return data.enc.eot_token  # a continued text (a story) ends where its document does
    return task_prompts(task, data.test[:1], data.enc)[1] if data.test else None


def read_prompts(args) -> list[str]:
    """The prompt texts of ``--prompt`` and ``--prompts-file`` (one per line), checked non-empty.

    Example:
        >>> import argparse
        >>> read_prompts(argparse.Namespace(prompt=["1+1=", "2+2="], prompts_file=None))
        ['1+1=', '2+2=']
    """
    texts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if path.is_dir():
            raise UserError(f"--prompts-file {path} is a folder; give a text file with one prompt per line")
        if not path.is_file():
            raise UserError(f"--prompts-file {path} does not exist")
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read --prompts-file {path}: {e}") from None
        for i, line in enumerate(lines, start=1):
            if not line:
                raise UserError(f"--prompts-file {path}: line {i} is an empty prompt")
            texts.append(line)
    if not texts:
        raise UserError("give at least one prompt: --prompt TEXT or --prompts-file FILE")
    for i, t in enumerate(texts, start=1):
        if not t:
            raise UserError(f"prompt {i} is empty")
    return texts


def cmd_decode(args) -> int:
    """``mtplab decode``: speculative decoding of the given prompts."""
    from lab.decode import greedy_generate
    from lab.speculative import DecodeStats, check_heads, speculative_decode

    texts = read_prompts(args)
    _positive("--max-new-tokens", args.max_new_tokens)
    _positive("--batch-size", args.batch_size)
    config, task, data, model = _load(args.run, args.device)
    k = check_heads(model, args.heads)
    enc, context = data.enc, config.train.context
    prompts = []
    for i, text in enumerate(texts, start=1):
        ids = ([] if args.no_eot else [enc.eot_token]) + enc.encode_ordinary(text)
        if len(ids) > context:
            raise UserError(f"prompt {i} is {len(ids)} tokens, longer than the model's context of {context}")
        prompts.append(ids)
    stop = _stop_token(args, task, data)
    stats = DecodeStats()
    t0 = time.perf_counter()
    outs = speculative_decode(model, prompts, args.max_new_tokens, heads=k, stop_token=stop,
                              batch_size=args.batch_size, stats=stats)
    seconds = time.perf_counter() - t0
    for out in outs:
        print(json.dumps(enc.decode(out), ensure_ascii=False)[1:-1])
    acc = " ".join(f"h{j} {100 * v:.0f}%" for j, v in stats.acceptance().items())
    print(f"{len(prompts)} prompts, k={k} {model.config.head_kind} heads: {sum(map(len, outs))} tokens, "
          f"{stats.tokens_per_forward:.2f} tokens per forward after the prefill"
          f"{', acceptance ' + acc if acc else ''}; {seconds:.2f}s with warm-up (speed: mtplab bench decode)",
          file=sys.stderr)
    if args.check:
        plain = greedy_generate(model, prompts, args.max_new_tokens, stop_token=stop, batch_size=args.batch_size)
        if plain != outs:
            print("check: the output DIFFERS from plain greedy decoding", file=sys.stderr)
            return 1
        print("check: identical to plain greedy decoding", file=sys.stderr)
    return 0


def cmd_bench_decode(args) -> int:
    """``mtplab bench decode``: speculative vs plain greedy decoding on the run's test prompts."""
    from lab.bench_decode import bench_decode, bench_decode_batch_sizes, format_batch_sizes, format_bench
    from lab.decode import continuation_prompts, default_workload, pick, task_prompts
    from lab.speculative import check_heads

    batch_sizes = _int_list("--batch-size", args.batch_size)
    _positive("--repeats", args.repeats)
    if args.threads:
        import torch

        torch.set_num_threads(_positive("--threads", args.threads))
    if args.limit < 0 or args.max_new_tokens < 0 or args.prompt_tokens < 0:
        raise UserError("--limit, --prompt-tokens and --max-new-tokens must be >= 0")
    if args.json:
        check_output_file(args.json, "--json")  # before the benchmark, not after it
    config, task, data, model = _load(args.run, args.device)
    if args.heads:
        ks = _int_list("--heads", args.heads)
    else:
        ks = list(range(1, model.config.n + 1))
    for k in ks:
        check_heads(model, k)
    records = pick(data.test, args.limit)
    if not records:
        raise UserError(f"{args.run}: the task has no test prompts")
    context = config.train.context
    mode, prompt_len, new_len = default_workload(task, context)
    mode = args.mode or mode
    if mode == "continue":
        prompt_len = args.prompt_tokens or prompt_len or min(128, context // 4)
        max_new = args.max_new_tokens or new_len or min(256, context - prompt_len)
        if prompt_len + max_new > context:
            raise UserError(f"--prompt-tokens {prompt_len} + --max-new-tokens {max_new} = {prompt_len + max_new} "
                            f"is past the model's context of {context}; decode within it")
        prompts, stop = continuation_prompts(task, records, data.enc, prompt_len), None
    else:
        if args.prompt_tokens:
            raise UserError("--prompt-tokens is for --mode continue (answers mode uses the test prompts)")
        prompts, stop, longest = task_prompts(task, records, data.enc)
        fits = [p for p in prompts if len(p) <= context]
        if not fits:
            raise UserError(f"every test prompt is longer than the model's context of {context}")
        if len(fits) < len(prompts):
            print(f"skipping {len(prompts) - len(fits)} test prompts longer than the context of {context}",
                  file=sys.stderr)
        prompts = fits
        max_new, stop = (args.max_new_tokens, None) if args.max_new_tokens else (longest, stop)
    common = dict(stop_token=stop, heads=ks, repeats=args.repeats, fused=not args.unfused)
    where = dict(run=str(args.run), mode=mode, prompt_tokens=prompt_len if mode == "continue" else None)
    if len(batch_sizes) == 1:
        result = bench_decode(model, prompts, max_new, batch_size=batch_sizes[0], **common)
        result.update(where)
        print(format_bench(result))
    else:
        result = bench_decode_batch_sizes(model, prompts, max_new, batch_sizes=batch_sizes, **common)
        for one in result["by_batch_size"].values():
            one.update(where)
        result.update(where)
        print(format_batch_sizes(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2, default=str))
    return 0
