"""`mtplab compare`: groups of run folders on one metric, against a baseline."""

import json

import pytest

from lab.cli import main


def _run(root, name, value, *, tokens=1000, metric="acc", best=None, source=None):
    d = root / name
    d.mkdir(parents=True)
    data = {"history": [{"tokens": tokens // 2}, {"tokens": tokens}], "metrics": {metric: value}}  # as lab.train writes
    if best is not None:
        data["best"] = {"metrics": {metric: best}, "step": 1, "tokens": tokens // 2}
    (d / "eval.json").write_text(json.dumps(data))
    meta = {"init_from": {"run_dir": str(source), "step": 1}} if source else {}
    (d / "config.json").write_text(json.dumps({"meta": meta}))
    return d


def test_compare_table_means_intervals_and_welch_against_the_baseline(tmp_path, capsys):
    src = _run(tmp_path, "src", 0.1, tokens=2000)
    for i, v in enumerate((0.50, 0.52, 0.51)):
        _run(tmp_path / "a", f"s{i}", v, best=0.9, source=src)
    for i, v in enumerate((0.20, 0.22, 0.21)):
        _run(tmp_path / "b", f"s{i}", v)
        _run(tmp_path / "m", f"s{i}", 0.3, metric="acc/marginal")
    out = tmp_path / "table.md"
    code = main(["compare", "--group", "A", f"{tmp_path}/a/*", "--group", "B", f"{tmp_path}/b/*",
                 "--group", "M", f"{tmp_path}/m/*", "acc/marginal", "--metric", "acc", "--baseline", "B",
                 "--out", str(out)])
    assert code == 0
    rows = {line.split(" | ")[0].strip("| "): line for line in out.read_text().splitlines()[2:]}
    # diff 0.30, se = sqrt(2 * 1e-4 / 3), df 4, t(0.975, 4) = 2.776 -> half-width 0.0227
    assert "| +30.0 [+27.7, +32.3] | 0.000 | 0.10 |" in rows["A"]
    assert "| 3,000 |" in rows["A"]  # 1,000 own tokens + the init_from source's 2,000
    assert "acc/marginal | 3 | 30.0% [30.0, 30.0]" in rows["M"]
    assert "+9.0 [+6.5, +11.5]" in rows["M"]  # M has no spread: se = sqrt(1e-4 / 3), df 2, t = 4.303
    assert capsys.readouterr().out.startswith("| group | metric |")
    main(["compare", "--group", "A", f"{tmp_path}/a/*", "--metric", "acc", "--checkpoint", "best",
          "--figure", str(tmp_path / "fig.png")])
    assert "90.0% [90.0, 90.0]" in capsys.readouterr().out
    assert (tmp_path / "fig.png").stat().st_size > 1000 and (tmp_path / "fig.csv").read_text().count("\n") == 4


def test_losses_and_tokens_per_forward_are_not_percentages(tmp_path, capsys):
    """Only fractions are shown in percent: a loss of 0.9 or 2.3 tokens per forward stays what it is."""
    for i, (loss, tpf) in enumerate(((0.90, 2.30), (0.94, 2.34))):
        _run(tmp_path / "a", f"s{i}", loss, metric="loss/heldout")
        _run(tmp_path / "t", f"s{i}", tpf, metric="agreement/tokens_per_forward")
    for group, metric, mean in (("a", "loss/heldout", "| 0.92 [0.6659, 1.174] | 0.9, 0.94 |"),
                                ("t", "agreement/tokens_per_forward", "| 2.32 [2.066, 2.574] | 2.3, 2.34 |")):
        assert main(["compare", "--group", "G", f"{tmp_path}/{group}/*", "--metric", metric,
                     "--figure", str(tmp_path / f"{group}.png")]) == 0
        out = capsys.readouterr().out
        assert mean in out and "%" not in out.split("\n")[2], out
    assert (tmp_path / "t.png").stat().st_size > 1000


@pytest.mark.parametrize("args,needle", [
    (["--group", "nolabel"], "give LABEL GLOB or LABEL GLOB METRIC"),
    (["--group", "A", "{root}/a/*", "acc", "x"], "give LABEL GLOB or LABEL GLOB METRIC"),
    (["--group", "A", "{root}/none/*"], "no run folder matches"),
    (["--group", "A", "{root}/a/*", "--group", "A", "{root}/a/*"], "labels must differ"),
    (["--group", "A", "{root}/a/*", "--baseline", "Z"], "--baseline 'Z' is not a group"),
    (["--group", "A", "{root}/a/*", "loss"], "has no loss in its final eval"),
    (["--group", "A", "{root}/a/*", "--out", "{root}/missing/t.md"], "give a file path in an existing folder"),
    (["--group", "A", "{root}/a/*", "--figure", "{root}/t.svg"], "give a .png path"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    _run(tmp_path / "a", "s0", 0.5)
    argv = ["compare", *[a.replace("{root}", str(tmp_path)) for a in args], "--metric", "acc"]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "missing").exists()
