"""The ``mtplab`` command (also ``python -m lab``).

Every subcommand has ``--help`` with an example. Bad input of any kind gives
one line on stderr and exit status 2; nothing partial is written.

Example:
    $ mtplab tasks
    $ mtplab generate polyarith --split test --out test.jsonl
    $ mtplab train --task polyarith --size 1M --n 2 --out runs/x
    $ mtplab train --resume runs/x
    $ mtplab eval runs/x
    $ mtplab bench train --size 1M --vocab 32768
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab.config import HEAD_KINDS, MAX_SEED
from lab.errors import UserError
from lab.paths import atomic_write_text, check_output_dir, check_output_file
from lab.shorthands import SHORTHANDS


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message} (see --help)")


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


# Flags that are shorthands for dotted config fields (the one table, lab/shorthands.py); --heads-on-top
# is a switch of its own.
TRAIN_FLAGS = {flag: key for flag, key in SHORTHANDS.items() if flag != "heads_on_top"}


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["train.lr=1e-3", ...]`` -> ``{"train.lr": "1e-3"}``.

    Example:
        >>> parse_sets(["model.n=2", "task.test_per_op=100"])
        {'model.n': '2', 'task.test_per_op': '100'}
    """
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value (e.g. train.lr=3e-4), got '{item}'")
        out[key.strip()] = value.strip()
    return out


def _given_train_flags(args) -> list[str]:
    """The training-config flags given on the command line (``--lr``, ``--set``, ...), as typed."""
    given = [f"--{flag.replace('_', '-')}" for flag in (*TRAIN_FLAGS, "task", "out", "stories_file")
             if getattr(args, flag, None) is not None]
    given += [f"--{flag.replace('_', '-')}" for flag in ("heads_on_top", "compile", "no_progress") if getattr(args, flag, False)]
    if getattr(args, "set", None):
        given.append("--set " + " ".join(args.set))
    return given


def _overrides(args) -> dict[str, str]:
    over = {}
    for flag, key in TRAIN_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            over[key] = value
    if getattr(args, "heads_on_top", False):
        over["model.heads_on_top"] = True
    if getattr(args, "compile", False):
        over["train.compile"] = True
    if getattr(args, "no_progress", False):
        over["train.progress"] = False
    if getattr(args, "stories_file", None):
        over["task.stories_file"] = args.stories_file
    over.update(parse_sets(getattr(args, "set", None)))
    return over


def format_metrics(metrics: dict, title: str = "") -> str:
    """A two-column table of metrics, accuracies as percentages.

    Example:
        >>> print(format_metrics({"accuracy/ops=1": 0.5}))
        metric            value
        accuracy/ops=1    50.00%
    """
    width = max([len(k) for k in metrics] + [6]) + 4
    lines = [title] if title else []
    lines.append(f"{'metric':<{width}}value")
    for key, value in metrics.items():
        shown = f"{100 * value:.2f}%" if ("acc" in key or "success" in key) and isinstance(value, float) else f"{value:g}"
        lines.append(f"{key:<{width}}{shown}")
    return "\n".join(lines)


# ---------------- subcommands ----------------

def cmd_tasks(args) -> int:
    from generators import registry

    for name in registry.names():
        cls = registry.get(name)
        print(f"{name:<14} objective={cls.objective:<22} {cls.description}")
    return 0


def cmd_generate(args) -> int:
    from generators import registry
    from lab.fields import build_dataclass
    from lab.data import prepare

    over = _overrides(args)
    bad = [k for k in over if not k.startswith("task.")]
    if bad:
        raise UserError(f"generate only takes task.* settings, got {', '.join(bad)}")
    cls = registry.get(args.task)
    task = cls(build_dataclass(cls.Config, {k[5:]: v for k, v in over.items()}, where="task"))
    if args.split not in task.splits:
        raise UserError(f"unknown split '{args.split}' for {args.task}; choose one of {', '.join(task.splits)}")
    if args.limit < 0:
        raise UserError(f"--limit must be >= 0 (0: every example), got {args.limit}")
    if not 0 <= args.gen_seed <= MAX_SEED:
        raise UserError(f"--seed must be in 0 .. 2**63-1, got {args.gen_seed}")
    if args.out:
        check_output_file(args.out, "--out")
    import time

    t0 = time.time()
    data = prepare(task, args.gen_seed, quiet=not args.time, rebuild=args.rebuild)
    splits = [args.split] + (["test"] if args.stats and args.split == "train" and "test" in task.splits else [])
    for split in splits:
        records = data.test if split == "test" else task.build(split, args.gen_seed)
        if args.stats:
            stats = task.stats(records, data.enc)
            print(f"[{args.task} {split}]")
            for key, value in stats.items():
                print(f"  {key:<34}{value:,.4g}" if isinstance(value, float) else f"  {key:<34}{value}")
        if split == args.split and (args.out or not args.stats):
            export = getattr(task, "export", None)
            rows = export(records, data.enc) if export else records
            if args.limit:
                rows = rows[:args.limit]
            text = "".join(json.dumps(r) + "\n" for r in rows)
            if args.out:
                atomic_write_text(args.out, text)
                print(f"wrote {len(rows):,} {split} examples to {args.out}", file=sys.stderr)
            else:
                sys.stdout.write(text)
    if args.time:
        print(f"time: {time.time() - t0:.1f}s (dataset at {data.path})")
    return 0


def cmd_train(args) -> int:
    from generators import registry
    from lab.config import build_run_config
    from lab.train import resume, run

    if args.resume:
        ignored = _given_train_flags(args)
        if ignored:
            raise UserError(f"--resume continues {args.resume} with the config stored in its config.json, so "
                            f"{', '.join(ignored)} would be ignored; drop {'it' if len(ignored) == 1 else 'them'} "
                            f"(to train with other settings, start a new run with --out)")
        summary = resume(Path(args.resume), rebuild=args.rebuild)
    else:
        if not args.out:
            raise UserError("train needs --out RUN_DIR (or --resume RUN_DIR)")
        config = build_run_config(registry.get(args.task or "polyarith"), _overrides(args))
        check_output_dir(args.out, "--out")
        summary = run(config, Path(args.out), rebuild=args.rebuild)
    if summary["rank"]:  # under torchrun, rank 0 alone reports
        return 0
    print(format_metrics(summary["metrics"], title=f"final eval at step {summary['step']} ({summary['run_dir']})"))
    if summary["best"]:
        obj, best = summary["objective"], summary["best"]
        how = "chosen on validation" if summary["selection"].startswith("valid/") else "chosen on test (no validation split)"
        print(f"best checkpoint ({how}): step {best['step']}, test {obj} = {best['metrics'].get(obj, float('nan')):.4f}")
    for key, value in summary.get("milestones", {}).items():
        if key.startswith("tokens_to_"):
            print(f"{key}: {'not reached' if value is None else f'{value:,.0f} tokens'}")
    return 0


def cmd_eval(args) -> int:
    """``mtplab eval RUN``: the training run's final evaluation, again, on the checkpoint (eval.json untouched)."""
    from lab.train import evaluate_run, load_run, select_device

    if args.limit < 0:
        raise UserError(f"--limit must be >= 0 (0: every example), got {args.limit}")
    if args.json:
        check_output_file(args.json, "--json")
        if Path(args.json).resolve() == (Path(args.run) / "eval.json").resolve():
            raise UserError(f"--json {args.json} is the run's own eval.json (its training record); choose another file")
    device = select_device(args.device) if args.device else None
    config, task, data, model, state = load_run(Path(args.run), device)
    metrics = evaluate_run(config, task, data, model, next(model.parameters()).device, limit=args.limit or None)
    print(format_metrics(metrics, title=f"{args.run}: step {state['step']}"
                                        + (f", {args.limit} examples per slice" if args.limit else "")))
    if args.json:
        atomic_write_text(args.json, json.dumps({"step": state["step"], "limit": args.limit or None,
                                                 "metrics": metrics}, indent=2))
        print(f"wrote {args.json} ({Path(args.run) / 'eval.json'} is not changed)")
    else:
        print(f"({Path(args.run) / 'eval.json'} is not changed; --json FILE writes these metrics)")
    return 0


def cmd_bench(args) -> int:
    from lab import bench

    if getattr(args, "json", None):
        check_output_file(args.json, "--json")
    return bench.main(args)


def cmd_bench_gpu(args) -> int:
    from lab import gpu_check

    if args.json:
        check_output_file(args.json, "--json")
    return gpu_check.main(args)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mtplab", description="Multi-token prediction lab: tasks, training, sweeps, figures.",
                formatter_class=_formatter, epilog=__doc__.split("Example:")[1])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("tasks", help="list registered tasks", formatter_class=_formatter,
                       epilog="example:\n  mtplab tasks")
    s.set_defaults(func=cmd_tasks)

    s = sub.add_parser("generate", help="write a task's examples as JSONL, or print statistics",
                       formatter_class=_formatter,
                       epilog="examples:\n  mtplab generate polyarith --split test --out test.jsonl\n"
                              "  mtplab generate induction --split train --stats --time\n"
                              "  mtplab generate polyarith --split test --set task.test_per_op=2000 --out t.jsonl")
    s.add_argument("task")
    s.add_argument("--split", default="test")
    s.add_argument("--out", help="JSONL file (default: stdout)")
    s.add_argument("--seed", dest="gen_seed", type=int, default=0, help="data seed (default 0)")
    s.add_argument("--limit", type=int, default=0, help="write only the first N examples")
    s.add_argument("--stats", action="store_true", help="print dataset statistics (train also shows test)")
    s.add_argument("--time", action="store_true", help="report how long building the dataset took")
    s.add_argument("--stories-file", help="induction: your own stories instead of generated ones")
    s.add_argument("--set", action="append", metavar="task.KEY=VALUE", help="any task config field")
    s.add_argument("--rebuild", action="store_true", help="build the cached dataset afresh (e.g. after it was damaged)")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("train", help="train one model into a run folder", formatter_class=_formatter,
                       epilog="examples:\n  mtplab train --task polyarith --size 1M --n 2 --out runs/x\n"
                              "  mtplab train --task polyarith --size 1M --n 4 --head-kind causal --tokens 5e6 --out runs/y\n"
                              "  mtplab train --resume runs/x\n"
                              "  mtplab train --task polyarith --set model.heads_on_top=true --set train.lr=3e-4 --out runs/z\n"
                              "  mtplab train --init-from runs/x --n 4 --freeze trunk --out runs/x-n4   "
                              "(docs/from-next-token.md)\n"
                              "  torchrun --nproc_per_node 8 -m lab train --size 1B ... --out runs/w   "
                              "(one run on 8 GPUs; README, Many GPUs)")
    s.add_argument("--task", help="task name (mtplab tasks); default polyarith")
    s.add_argument("--out", help="run folder to create")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    s.add_argument("--size", help="1M 3M 10M 30M 100M 300M 1B, or custom with --set model.d_model=...")
    s.add_argument("--n", help="number of future tokens predicted (heads)")
    s.add_argument("--head-kind", help=" | ".join(HEAD_KINDS))
    s.add_argument("--heads-on-top", action="store_true", help="add the n-1 extra heads on top (no parameter matching)")
    s.add_argument("--loss-weights", help="per-head loss weights, e.g. 1,0.5,0.5,0.5")
    s.add_argument("--init-from", metavar="RUN_DIR",
                   help="start from RUN_DIR's checkpoint: its trunk and heads loaded, the missing heads added on top "
                        "(train.init_from; give the same task and size)")
    s.add_argument("--freeze", help="parts kept fixed: none | trunk | trunk,source_heads (train.freeze)")
    s.add_argument("--tokens", help="training budget in tokens (e.g. 2e6; at most 1e13)")
    s.add_argument("--steps", help="training budget in optimizer steps (overrides --tokens; 0: from --tokens)")
    s.add_argument("--batch-tokens", help="tokens per optimizer step")
    s.add_argument("--micro-batch", help="sequences per forward/backward, all processes together under torchrun "
                                         "(gradient accumulation)")
    s.add_argument("--context", help="sequence length")
    s.add_argument("--lr", help="peak learning rate")
    s.add_argument("--warmup-steps", help="linear warmup steps (-1: min(2000, steps/10))")
    s.add_argument("--seed", help="model init and data order seed")
    s.add_argument("--data-seed", help="dataset seed")
    s.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    s.add_argument("--dtype", help="auto | float32 | bfloat16")
    s.add_argument("--compile", action="store_true", help="torch.compile the blocks")
    s.add_argument("--eval-interval", help="steps between evaluations (0: 5 per run)")
    s.add_argument("--eval-examples", help="examples per slice at intermediate evals (0: all)")
    s.add_argument("--stories-file", help="induction: your own stories instead of generated ones")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config field by dotted name")
    s.add_argument("--rebuild", action="store_true",
                   help="build the cached dataset afresh (e.g. after it was damaged); also with --resume")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="re-evaluate a run's checkpoint: the same evaluation as the run's final one",
                       formatter_class=_formatter,
                       description="Scores the run's checkpoint exactly as training's final eval does: test (and "
                                   "validation, as valid/...), held-out vs seen loss (memorization_gap) and, for "
                                   "n > 1, head agreement, and the marginalization baseline (future_acc/...). The run's eval.json is not "
                                   "changed; --json writes a copy.",
                       epilog="examples:\n  mtplab eval runs/x\n  mtplab eval runs/x --limit 50 --json x-eval.json")
    s.add_argument("run")
    s.add_argument("--device", help="auto | cpu | cuda")
    s.add_argument("--limit", type=int, default=0, help="examples per slice (0: all, as the final eval)")
    s.add_argument("--json", help="write the metrics to this JSON file (eval.json in the run is not changed)")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("bench", help="benchmarks that print numbers", formatter_class=_formatter,
                       epilog="examples:\n  mtplab bench train --size 1M --vocab 32768\n  mtplab bench train --size 10M --steps 5")
    bsub = s.add_subparsers(dest="bench", metavar="WHAT", parser_class=_Parser)
    b = bsub.add_parser("train", help="tokens/s and peak memory: sequential vs naive backward, n=1,2,4",
                        formatter_class=_formatter,
                        epilog="example:\n  mtplab bench train --size 1M --vocab 32768 --context 256 --batch 8")
    from lab.bench import add_train_args

    add_train_args(b)
    b.set_defaults(func=cmd_bench)
    b = bsub.add_parser("gpu", help="the GPU check: short CUDA runs (n=1,4, compile), 2-GPU torchrun; tokens/s, MFU",
                        formatter_class=_formatter, epilog="examples:\n  mtplab bench gpu\n"
                                                          "  mtplab bench gpu --size 100M --steps 50 --json gpu.json")
    from lab.gpu_check import add_args as add_gpu_args

    add_gpu_args(b)
    b.set_defaults(func=cmd_bench_gpu)
    from lab.speculative_cli import add_parser as add_decode_parsers  # decode and bench decode: lab's own

    add_decode_parsers(sub, bsub)
    _add_plugin_commands(sub, bsub)
    return p


def _add_plugin_commands(sub, bench_sub) -> None:
    """Subcommands from the other rooms (sweeps, analysis) and plugins.

    lab never imports sweeps or analysis by name: they declare entry points in
    the group ``mtplab.commands`` (see pyproject.toml), each a function
    ``add_parser(subparsers, bench_subparsers)`` that adds its subcommands
    with ``set_defaults(func=...)``.
    """
    import importlib.metadata

    for ep in sorted(importlib.metadata.entry_points(group="mtplab.commands"), key=lambda e: e.name):
        ep.load()(sub, bench_sub)


# Options whose value is free text that may start with '-' (every polyarith negation prompt does).
TEXT_OPTIONS = ("--prompt", "--stop")


def _join_text_values(argv: list[str]) -> list[str]:
    """``--prompt -54243=`` -> ``--prompt=-54243=`` (argparse would take ``-54243=`` for an option).

    Only a value with a single leading dash is joined; one with two (``--heads``)
    stays an option, so a forgotten value is still reported.

    Example:
        >>> _join_text_values(["decode", "r", "--prompt", "-54243=", "--heads", "2"])
        ['decode', 'r', '--prompt=-54243=', '--heads', '2']
    """
    out, i = [], 0
    while i < len(argv):
        if argv[i] in TEXT_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and not argv[i + 1].startswith("--"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, turn UserError into one line + exit 2."""
    parser = build_parser()
    argv = _join_text_values(sys.argv[1:] if argv is None else list(argv))
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return args.func(args) or 0
    except UserError as e:
        print(f"mtplab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtplab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
