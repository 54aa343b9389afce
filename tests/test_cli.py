"""The mtplab CLI: tasks, generate, help texts, one-line errors."""

import json

import pytest

from generators.polyarith import evaluate_tree
from lab.cli import build_parser, main


def test_tasks_lists_one_line_per_task(capsys):
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("polyarith ") and "objective=accuracy/in_domain" in line for line in lines)


def test_generate_polyarith_test_split(tmp_path, capsys):
    out = tmp_path / "test.jsonl"
    assert main(["generate", "polyarith", "--split", "test", "--set", "task.test_per_op=3", "--set", "task.train_examples=2000", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 30 and sorted({r["ops"] for r in rows}) == list(range(1, 11))
    for r in rows:
        assert set(r) >= {"prompt", "answer", "result", "ops", "expr"}
        assert r["prompt"].endswith("=") and r["answer"] == "".join(map(str, r["result"]))
        assert list(evaluate_tree(r["expr"])) == r["result"]
    # same command, same bytes (deterministic)
    first = out.read_bytes()
    assert main(["generate", "polyarith", "--split", "test", "--set", "task.test_per_op=3", "--set", "task.train_examples=2000", "--out", str(out)]) == 0
    assert out.read_bytes() == first


def test_generate_stats_prints_both_splits(capsys):
    assert main(["generate", "polyarith", "--split", "train", "--stats", "--set", "task.train_examples=200",
                 "--set", "task.test_per_op=2"]) == 0
    out = capsys.readouterr().out
    assert "[polyarith train]" in out and "[polyarith test]" in out


@pytest.mark.parametrize("argv,needle", [
    (["generate", "polyarith", "--split", "dev"], "unknown split 'dev'"),
    (["generate", "polyarith", "--out", "/nonexistent/dir/x.jsonl"], "does not exist"),
    (["generate", "polyarith", "--set", "model.n=2"], "only takes task.* settings"),
    (["generate", "polyarith", "--set", "task.test_per_op=zero"], "task.test_per_op: expected int"),
    (["generate", "nosuchtask"], "unknown task 'nosuchtask'"),
    (["bench", "train", "--size", "7M"], "unknown size '7M'"),
    (["nosuchcommand"], "invalid choice"),
    (["generate", "polyarith", "--limit", "-1"], "--limit must be >= 0"),
    (["generate", "polyarith", "--seed", "-1"], "--seed must be in 0 .. 2**63-1"),
    (["generate", "polyarith", "--out", "/proc/mtplab-test.jsonl"], "cannot write in /proc"),
    (["bench", "train", "--size", "1M", "--json", "/proc/mtplab-bench.json"], "cannot write in /proc"),
])
def test_bad_input_one_line_exit_2(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_every_subcommand_help_has_an_example():
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    assert {"tasks", "generate", "train", "eval", "bench"} <= set(subs)
    for name, sub in subs.items():
        assert "example" in (sub.epilog or ""), name


def test_generate_output_paths_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MTPLAB_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    for out, needle in ((tmp_path / "dir", "is a folder; give a file path"),
                        (tmp_path / "file" / "sub.jsonl", "file is a file, not a folder")):
        assert main(["generate", "polyarith", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]  # no dataset built, no .tmp left
    assert not list((tmp_path / "dir").iterdir()) and (tmp_path / "file").read_text() == "x"


def test_a_prompt_starting_with_a_minus_is_a_prompt(capsys):
    """Every polyarith negation prompt starts with '-': `--prompt -54243=` must not read as an option."""
    from lab.cli import _join_text_values

    argv = ["decode", "runs/x", "--prompt", "-54243=", "--prompt", "(1+2)=", "--heads", "2"]
    args = build_parser().parse_args(_join_text_values(argv))
    assert args.prompt == ["-54243=", "(1+2)="] and args.heads == 2
    assert main(["decode", "/nonexistent/run", "--prompt", "-54243="]) == 2
    assert "is not a run folder" in capsys.readouterr().err  # parsed; failed only on the missing run
