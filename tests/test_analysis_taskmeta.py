"""Any task gets the accuracy-vs-difficulty figure, titled and shaded from its own declared metadata."""

import dataclasses

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from analysis import draw, figures  # noqa: E402
from analysis.plotkit import metric_label  # noqa: E402
from analysis.taskmeta import TaskMeta  # noqa: E402
from generators.registry import Task  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ReverseConfig:
    train_max_len: int = 4


class Reverse(Task):  # a third-party length-generalization task (not registered: the figures need only its metadata)
    name, Config, objective = "reverse", ReverseConfig, "accuracy/in_domain"
    title, difficulty = "String reversal", "string length"

    def __init__(self, config):
        super().__init__(config)
        self.in_domain = tuple(f"accuracy/length={n}" for n in range(2, config.train_max_len + 1))
        self.ood = tuple(f"accuracy/length={n}" for n in range(config.train_max_len + 1, 7))


def _frame():
    rows = []
    for n in (1, 2):
        for seed in (0, 1):
            row = {"task": "reverse", "size": "1M", "size_rank": 1e6, "n": n, "seed": seed, "trial": len(rows),
                   "non_embedding": 1e6, "budget_tokens": 1e6, "accuracy/in_domain": 0.5, "accuracy/ood": 0.1}
            row.update({f"accuracy/length={k}": 1.0 / k for k in range(2, 7)})
            rows.append(row)
    return pd.DataFrame(rows)


def test_a_length_task_gets_its_own_figure_title_axis_and_regions(tmp_path, monkeypatch):
    meta = TaskMeta.of_task(Reverse(ReverseConfig(train_max_len=3)))
    assert (meta.title, meta.axis, meta.figure, meta.in_domain, meta.ood) == (
        "String reversal", "string length", "accuracy_vs_length", (2, 3), (4, 5, 6))
    frame = _frame()
    assert "accuracy_vs_length" in draw.plan(frame, "reverse", meta)
    assert "accuracy_vs_ops" not in draw.plan(frame, "reverse", meta)

    titles = []
    monkeypatch.setattr(figures, "_finish", lambda fig, title, caption: titles.append(title))
    files, skipped = draw.draw_all(frame, tmp_path, task="reverse", meta=meta)
    assert {p.name for p in files["accuracy_vs_length"]} == {"accuracy_vs_length.png", "accuracy_vs_length.pdf",
                                                            "accuracy_vs_length.csv"}
    csv = pd.read_csv(tmp_path / "accuracy_vs_length.csv")
    means = csv[csv.kind == "mean"].drop_duplicates("m").set_index("m")["region"].to_dict()
    assert means == {2: "in-domain", 3: "in-domain", 4: "out-of-domain", 5: "out-of-domain", 6: "out-of-domain"}
    assert titles and all(t.startswith("String reversal") or t.startswith("Gain") or t.startswith("Training")
                          for t in titles), titles
    assert "String reversal: accuracy vs string length" in titles
    assert not any("Polynomial" in t or "m ≤" in t for t in titles)
    assert metric_label("accuracy/ood", frame, meta) == "out-of-domain accuracy (length > 3)"


def test_a_polyarith_study_keeps_its_figure_from_the_frame_alone(tmp_path):
    frame = _frame().drop(columns=[f"accuracy/length={k}" for k in range(2, 7)]).assign(
        **{"task": "polyarith", "accuracy/ops=1": 0.9, "accuracy/ops=6": 0.2, "task.train_max_ops": 5})
    meta = TaskMeta.from_frame(frame)
    assert (meta.title, meta.figure, meta.ood) == ("Polynomial arithmetic", "accuracy_vs_ops", (6,))
    plotted = figures.accuracy_vs_difficulty(frame, tmp_path, meta=meta)
    assert set(plotted["region"]) == {"in-domain", "out-of-domain"} and (tmp_path / "accuracy_vs_ops.png").exists()
