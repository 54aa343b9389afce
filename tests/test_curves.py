"""``mtplab curves``: learning curves of run folders against tokens and training minutes."""

import json

import pandas as pd

from lab.cli import main


def _run(folder, values, tokens_per_s=1000.0):
    folder.mkdir()
    history = [{"step": i + 1, "tokens": 1000 * (i + 1), "metrics": {"acc": v}} for i, v in enumerate(values)]
    (folder / "eval.json").write_text(json.dumps({"history": history}))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"step": i + 1, "tokens": 500 * (i + 1), "tokens_per_s": tokens_per_s}) + "\n"
        for i in range(2 * len(values))))
    return folder


def test_curves_draw_every_eval_with_its_training_minutes(tmp_path, capsys):
    a = _run(tmp_path / "a", [0.1, 0.5, 0.9])
    b = _run(tmp_path / "b", [0.0, 0.2], tokens_per_s=250.0)
    assert main(["curves", str(a), str(b), "--metric", "acc", "--label", "fast", "--label", "slow",
                 "--out", str(tmp_path / "cal.png")]) == 0
    for ext in ("png", "pdf", "csv"):
        assert (tmp_path / f"cal.{ext}").stat().st_size > 0
    points = pd.read_csv(tmp_path / "cal.csv")
    assert points.groupby("run").size().to_dict() == {"fast": 3, "slow": 2}
    slow = points[points["run"] == "slow"]
    # 2,000 tokens at 250 tokens/s is 8 s of training
    assert abs(slow["minutes"].iloc[-1] - 8 / 60) < 1e-9 and slow["value"].tolist() == [0.0, 0.2]


def test_curves_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    a = _run(tmp_path / "a", [0.1])
    out = tmp_path / "cal.png"
    for args in ([str(tmp_path / "missing"), "--metric", "acc"], [str(a), "--metric", "nope"],
                 [str(a), "--metric", "acc", "--label", "x", "--label", "y"]):
        assert main(["curves", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
    assert main(["curves", str(a), "--metric", "acc", "--out", str(tmp_path / "nodir" / "c.png")]) == 2
    assert main(["curves", str(a), "--metric", "acc", "--out", str(a)]) == 2  # a folder: not a.png beside it
    assert "is a folder" in capsys.readouterr().err
    assert not list(tmp_path.glob("cal.*")) and not list(tmp_path.glob("a.*"))
