"""The analysis room: loader, figures, report and the plot/report CLI, on studies built here.

The studies are real Optuna studies (journal files and SQLite) with known
metrics, plus run folders with metrics.jsonl, plus a RUNNING and a FAILED
trial, so the tests can assert the plotted numbers, not only that files exist.
"""

import json
import math
import os
import tempfile

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))
os.environ["MPLBACKEND"] = "Agg"

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib import image as mpimg  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from analysis import draw, figures, induction_figures, plotkit, report_paper, runs, selection, stats  # noqa: E402
from analysis.loader import load_study, load_trials, missing_cells, with_metrics  # noqa: E402
from analysis.report import metric_table  # noqa: E402
from lab.cli import main  # noqa: E402
from lab.errors import UserError  # noqa: E402
from sweeps.storage import open_storage  # noqa: E402

NON_EMB = {"1M": 12 * 5 * 128 ** 2, "3M": 12 * 4 * 256 ** 2, "10M": 12 * 6 * 384 ** 2}
SHAPE = {"1M": (128, 5, 4), "3M": (256, 4, 8), "10M": (384, 6, 8)}
BUDGET = 3_000_000


# ---------------- the synthetic studies ----------------

def poly_p(size, n, seed):
    """Per-operation success rate of a fake polyarith model: accuracy at m operations is p**m."""
    return 0.55 + 0.1 * list(NON_EMB).index(size) + (0.08 if n > 1 else 0) + (0.02 if n == 4 else 0) + 0.01 * seed


def poly_metrics(size, n, seed):
    p = poly_p(size, n, seed)
    acc = {m: p ** m for m in range(1, 11)}
    out = {f"accuracy/ops={m}": a for m, a in acc.items()}
    out["accuracy/in_domain"] = float(np.mean([acc[m] for m in range(1, 6)]))
    out["accuracy/ood"] = float(np.mean([acc[m] for m in range(6, 11)]))
    out["accuracy/all"] = float(np.mean(list(acc.values())))
    return out


def induction_success(size, n, seed):
    """Final induction success of a fake model: n = 2 helps at the small sizes only."""
    base = {"1M": 0.02, "3M": 0.05, "10M": 0.30}[size]
    gain = {"1M": 0.25, "3M": 0.30, "10M": 0.0}[size] if n == 2 else 0.0
    return base + gain + 0.02 * seed


INDUCTION_STEPS = (50, 100, 150, 200, 250)


def induction_history(s, extra):
    """Test and validation induction success at each eval of a run whose final test value is s.

    Validation peaks at step 150 (test s + 0.01 there: the valid-selected checkpoint), test at step 200
    (s + 0.025: the paper's test-selected one); the last eval is the final one (s). Test crosses 10% at
    step 100 when s >= 0.2, else never.
    """
    test = {50: 0.0, 100: 0.5 * s, 150: s + 0.01, 200: s + 0.025, 250: s}
    valid = {50: 0.0, 100: 0.4 * s, 150: s + 0.05, 200: s + 0.02, 250: s}
    return [{"step": st, "tokens": st * 8192, "epoch": st / 200, "final": st == 250,
             "metrics": {**extra(test[st]), "induction_success": test[st], "valid/induction_success": valid[st]}}
            for st in INDUCTION_STEPS]


def write_eval(run_dir, history, objective, milestones=None):
    """eval.json in the trainer's format: history, best (on valid/<objective>), best_by_test, milestones."""
    def pick(key):
        e = max(history, key=lambda e: e["metrics"][key])
        return {"step": e["step"], "tokens": e["tokens"], "metrics": e["metrics"]}
    has_valid = f"valid/{objective}" in history[-1]["metrics"]
    data = {"step": history[-1]["step"], "metrics": history[-1]["metrics"], "final": True, "objective": objective,
            "direction": "maximize", "selection": "valid" if has_valid else "test",
            "best": pick(f"valid/{objective}" if has_valid else objective), "best_by_test": pick(objective),
            "milestones": milestones if milestones is not None else {}, "history": history}
    (run_dir / "eval.json").write_text(json.dumps(data))
    return data


def write_run(run_dir, n, seed, steps=366):
    """A run folder with config.json and metrics.jsonl in the trainer's format (366 steps x 8192 = 3.0M tokens)."""
    run_dir.mkdir(parents=True)
    lines = []
    for step in range(5, steps + 1, 5):
        row = {"step": step, "tokens": step * 8192, "epoch": step / 300, "lr": 1e-3, "grad_norm": 1.0,
               "tokens_per_s": 5e4}
        for i in range(1, n + 1):
            row[f"loss/head={i}"] = 0.6 + 0.15 * (i - 1) + 2.5 * math.exp(-step / 150) + 0.01 * seed
            row[f"acc/head={i}"] = (0.9 - 0.12 * (i - 1)) * (1 - math.exp(-step / 150))
        row["loss"] = sum(row[f"loss/head={i}"] for i in range(1, n + 1))
        lines.append(json.dumps(row))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "config.json").write_text("{}")


def trial_attrs(task, size, n, seed, metrics, run_dir, best=None):
    d, layers, heads = SHAPE[size]
    cell = {"model.n": n, "model.size": size, "train.seed": seed}
    task_cfg = {"name": task}
    if task == "polyarith":
        task_cfg.update(train_min_ops=1, train_max_ops=5, test_min_ops=1, test_max_ops=10, test_per_op=500)
    return {
        "cell": cell, "cell_key": f"model.n={n},model.size={size},train.seed={seed}", "task": task,
        "config": {"task": task_cfg,
                   "model": {"size": size, "d_model": d, "layers": layers, "n_heads": heads, "n": n,
                             "head_kind": "parallel", "heads_on_top": False, "loss_weights": []},
                   "train": {"seed": seed, "tokens": BUDGET, "steps": 0, "batch_tokens": 8192, "context": 256,
                             "lr": 1e-3}},
        "metrics": metrics, "best_metrics": best or metrics, "best_step": 366,
        "params": {"total": NON_EMB[size] + 2 * 64 * d, "non_embedding": NON_EMB[size]},
        "tokens_seen": BUDGET - 1024, "wall_seconds": 120.0 + n, "device": "cpu", "env": {"python": "3"},
        "run_dir": str(run_dir),
    }


def make_study(storage, name, task, grid, objective):
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    spec = {"name": name, "task": task, "description": f"synthetic {task} study", "grid": grid,
            "budget": {"tokens": BUDGET}, "objective": objective}
    for key, value in {"spec": spec, "task": task, "objective": objective, "direction": "maximize",
                       "spec_path": f"{name}.yaml"}.items():
        study.set_user_attr(key, value)
    return study


def build_polyarith(root, storage, name="poly"):
    """2 sizes x n in {1, 2, 4} x 2 seeds; (3M, n=4, seed 1) still RUNNING; (3M, n=2, seed 1) failed once."""
    grid = {"model.size": ["1M", "3M"], "model.n": [1, 2, 4], "train.seed": [0, 1]}
    study = make_study(storage, name, "polyarith", grid, "accuracy/in_domain")
    for size in grid["model.size"]:
        for n in grid["model.n"]:
            for seed in grid["train.seed"]:
                run_dir = root / name / f"{size}-n{n}-s{seed}"
                attrs = trial_attrs("polyarith", size, n, seed, poly_metrics(size, n, seed), run_dir)
                if (size, n, seed) == ("3M", 4, 1):
                    study.add_trial(create_trial(state=TrialState.RUNNING, user_attrs={
                        k: attrs[k] for k in ("cell", "cell_key", "task")}))
                    continue
                if (size, n, seed) == ("3M", 2, 1):
                    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={
                        k: attrs[k] for k in ("cell", "cell_key", "task")}))
                write_run(run_dir, n, seed)
                study.add_trial(create_trial(value=attrs["metrics"]["accuracy/in_domain"], user_attrs=attrs))
    return study


def build_induction(root, storage, name="induct"):
    """The new trainer contract: validation metrics, valid- and test-selected checkpoints, milestones.

    (3M, n=1, seed 1) has no milestones in its trial (an older sweep runner): they come from its eval.json.
    """
    grid = {"model.size": ["1M", "3M", "10M"], "model.n": [1, 2], "train.seed": [0, 1]}
    study = make_study(storage, name, "induction", grid, "induction_success")
    for size in grid["model.size"]:
        for n in grid["model.n"]:
            for seed in grid["train.seed"]:
                run_dir = root / name / f"{size}-n{n}-s{seed}"
                write_run(run_dir, n, seed, steps=250)
                s = induction_success(size, n, seed)
                gap = 0.9 if (size, n, seed) == ("10M", 2, 1) else 0.02  # one run memorized

                def extra(v, n=n, gap=gap):
                    return {"name_first_token_accuracy": 0.1, "memorization_gap": gap, "memorization_gap_se": 0.04,
                            **{f"induction_success/head={i}": v / i for i in range(1, n + 1)}}
                history = induction_history(s, extra)
                milestones = {"tokens_to_induction": 100 * 8192.0 if s >= 0.2 else None,
                              "tokens_to_half_best": 150 * 8192.0, "threshold": 0.1}
                ev = write_eval(run_dir, history, "induction_success", milestones)
                attrs = trial_attrs("induction", size, n, seed, ev["metrics"], run_dir, ev["best"]["metrics"])
                attrs.update(best_step=ev["best"]["step"], best_by_test_metrics=ev["best_by_test"]["metrics"],
                             best_by_test_step=ev["best_by_test"]["step"], milestones=milestones)
                if (size, n, seed) == ("3M", 1, 1):
                    del attrs["milestones"]
                study.add_trial(create_trial(value=s, user_attrs=attrs))
    return study


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory):
    """A folder with a journal storage (poly, induct, empty, copy studies), a spec file, and run folders."""
    root = tmp_path_factory.mktemp("analysis")
    journal = root / "journal.log"
    storage = open_storage(str(journal), create=True)
    build_polyarith(root, storage)
    build_induction(root, storage)
    optuna.create_study(storage=storage, study_name="empty")
    other = make_study(storage, "copy", "copy", {"model.n": [1]}, "loss")
    other.add_trial(create_trial(value=1.0, user_attrs={"cell": {"model.n": 1}, "task": "copy",
                                                        "metrics": {"loss": 1.0, "exact": 0.5}}))
    (root / "poly.yaml").write_text(f"study: poly\ntask: polyarith\ngrid: {{n: [1, 2]}}\nstorage: {journal}\n")
    (root / "induct.yaml").write_text(f"task: induction\ngrid: {{n: [1, 2]}}\nstorage: {journal}\n")  # study: the stem
    (root / "named.yaml").write_text(f"name: poly\ntask: polyarith\ngrid: {{n: [1]}}\nstorage: {journal}\n")
    return root


@pytest.fixture(scope="module")
def poly_figs(lab_dir):
    out = lab_dir / "poly_figs"
    assert main(["plot", str(lab_dir / "poly.yaml"), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def induct_figs(lab_dir):
    out = lab_dir / "induct_figs"
    assert main(["plot", str(lab_dir / "induct.yaml"), "--out", str(out)]) == 0
    return out


def assert_figure_files(folder, name):
    png, pdf, csv = (folder / f"{name}.{ext}" for ext in ("png", "pdf", "csv"))
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 400 and img.shape[1] > 600
    assert img[..., :3].std() > 0.05  # not a blank canvas
    head = pdf.read_bytes()
    assert head.startswith(b"%PDF-") and b"%%EOF" in head[-64:]
    return pd.read_csv(csv)


def expected_poly_mean(size, n, metric):
    seeds = [s for s in (0, 1) if (size, n, s) != ("3M", 4, 1)]
    return 100 * np.mean([poly_metrics(size, n, s)[metric] for s in seeds]), len(seeds)


# ---------------- loader ----------------

def test_open_storage_accepts_journal_sqlite_and_folders(lab_dir, tmp_path):
    journal = lab_dir / "journal.log"
    assert load_trials(str(journal), "poly").shape[0] == 11
    assert load_trials(str(lab_dir), "poly").shape[0] == 11  # a folder holding journal.log

    db = tmp_path / "s.db"
    build_induction(tmp_path, open_storage(f"sqlite:///{db}", create=True), name="sq")
    assert load_trials(f"sqlite:///{db}", "sq").shape[0] == 12
    assert load_trials(str(db), "sq").shape[0] == 12  # a plain path to an SQLite file


@pytest.mark.parametrize("url, message", [
    ("/nonexistent/journal.log", "does not exist"),
    ("sqlite:////nonexistent/x.db", "does not exist"),
    ("postgresql://me:hunter2@127.0.0.1:1/lab", "cannot reach storage postgresql://me:***@127.0.0.1:1/lab"),
])
def test_open_storage_bad_input_is_one_line(url, message):
    with pytest.raises(UserError) as e:
        open_storage(url)
    assert message in str(e.value) and "\n" not in str(e.value) and "hunter2" not in str(e.value)


def test_loader_columns_and_values(lab_dir):
    data = load_study(str(lab_dir / "journal.log"), "poly")
    df = data.frame
    assert len(df) == 11 and data.n_trials == 13  # 11 complete + 1 failed + 1 running
    for col in ("task", "n", "size", "non_embedding", "seed", "head_kind", "model.n", "model.size", "train.seed",
                "train.lr", "task.train_max_ops", "accuracy/ops=7", "accuracy/in_domain", "best:accuracy/ood"):
        assert col in df, col
    assert list(dict.fromkeys(df["size"])) == ["1M", "3M"]  # ladder order
    row = df[(df["size"] == "3M") & (df["n"] == 2) & (df["seed"] == 1)].iloc[0]
    assert row["accuracy/ops=3"] == pytest.approx(poly_p("3M", 2, 1) ** 3)
    assert row["non_embedding"] == NON_EMB["3M"] and row["budget_tokens"] == BUDGET
    assert set(data.swept) == {"model.n", "model.size", "train.seed"}
    assert "accuracy/ops=10" in data.metrics and "loss" not in data.metrics


def test_missing_cells_running_failed_and_not_started(lab_dir, tmp_path):
    missing = missing_cells(str(lab_dir / "journal.log"), "poly")
    # The failed cell was retried and completed: only the RUNNING cell is missing.
    assert missing[["cell_key", "state"]].values.tolist() == [["model.n=4,model.size=3M,train.seed=1", "RUNNING"]]

    storage = open_storage(str(tmp_path / "j.log"), create=True)
    study = make_study(storage, "part", "induction", {"model.n": [1, 2], "train.seed": [0, 1]}, "induction_success")
    study.add_trial(create_trial(value=0.1, user_attrs={"cell": {"model.n": 1, "train.seed": 0},
                                                        "metrics": {"induction_success": 0.1}}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"cell": {"model.n": 2, "train.seed": 0}}))
    study.enqueue_trial({}, user_attrs={"cell": {"model.n": 1, "train.seed": 1}})
    got = missing_cells(str(tmp_path / "j.log"), "part").set_index("cell_key")["state"].to_dict()
    assert got == {"model.n=2,train.seed=0": "FAIL", "model.n=1,train.seed=1": "WAITING",
                   "model.n=2,train.seed=1": "NOT_STARTED"}

    # A grid spelled differently from the cells is not turned into phantom missing cells.
    other = make_study(storage, "short", "induction", {"n": [1, 2, 4]}, "induction_success")
    other.add_trial(create_trial(value=0.1, user_attrs={"cell": {"model.n": 1}, "metrics": {"induction_success": 0.1}}))
    data = load_study(str(tmp_path / "j.log"), "short")
    assert data.missing.empty and "grid keys (n) are not the trials' cell keys" in data.notes[0]


def test_with_metrics_best_falls_back_to_final():
    f = pd.DataFrame({"n": [1, 2], "induction_success": [0.1, 0.2], "best:induction_success": [0.3, np.nan]})
    assert with_metrics(f, "best")["induction_success"].tolist() == [0.3, 0.2]
    assert with_metrics(f, "final")["induction_success"].tolist() == [0.1, 0.2]


# ---------------- figures: the plotted data ----------------

def test_accuracy_vs_ops_plots_every_seed_and_the_mean(poly_figs):
    csv = assert_figure_files(poly_figs, "accuracy_vs_ops")
    means = csv[csv["kind"] == "mean"]
    assert len(means) == 2 * 3 * 10 and "paper" not in set(csv["kind"])  # no 100M panel, no paper lines
    for size in ("1M", "3M"):
        for n in (1, 2, 4):
            for m in (1, 3, 6, 10):
                row = means[(means["size"] == size) & (means["n"] == n) & (means["m"] == m)].iloc[0]
                want, seeds = expected_poly_mean(size, n, f"accuracy/ops={m}")
                assert row["accuracy_pct"] == pytest.approx(want) and row["seeds"] == seeds
                assert row["region"] == ("out-of-domain" if m > 5 else "in-domain")
    seeds = csv[csv["kind"] == "seed"]
    assert len(seeds) == 11 * 10
    one = seeds[(seeds["size"] == "1M") & (seeds["n"] == 4) & (seeds["seed"] == 1) & (seeds["m"] == 2)].iloc[0]
    assert one["accuracy_pct"] == pytest.approx(100 * poly_p("1M", 4, 1) ** 2)


def test_accuracy_vs_size_and_gain(poly_figs):
    csv = assert_figure_files(poly_figs, "accuracy_vs_size")
    means = csv[csv["kind"] == "mean"]
    for metric in ("accuracy/in_domain", "accuracy/ood"):
        row = means[(means["metric"] == metric) & (means["size"] == "3M") & (means["n"] == 4)].iloc[0]
        assert row["accuracy_pct"] == pytest.approx(expected_poly_mean("3M", 4, metric)[0]) and row["seeds"] == 1

    gain = assert_figure_files(poly_figs, "gain_over_ntp")
    g = gain[(gain["kind"] == "mean") & (gain["metric"] == "accuracy/in_domain")].set_index(["size", "n"])
    assert set(g.index) == {("1M", 2), ("1M", 4), ("3M", 2), ("3M", 4)}
    a = [poly_metrics("1M", 2, s)["accuracy/in_domain"] for s in (0, 1)]
    b = [poly_metrics("1M", 1, s)["accuracy/in_domain"] for s in (0, 1)]
    assert g.loc[("1M", 2), "gain_pp"] == pytest.approx(100 * (np.mean(a) - np.mean(b)))
    se = math.sqrt(np.var(a, ddof=1) / 2 + np.var(b, ddof=1) / 2)
    assert g.loc[("1M", 2), "se_pp"] == pytest.approx(100 * se)
    assert math.isnan(g.loc[("3M", 4), "se_pp"]) and g.loc[("3M", 4), "seeds"] == 1  # one seed: no interval
    seeds = gain[(gain["kind"] == "seed") & (gain["metric"] == "accuracy/ood") & (gain["size"] == "1M")]
    assert len(seeds) == 4  # n = 2 and n = 4, two seeds each


def test_training_curves_from_run_folders(poly_figs):
    for size in ("1M", "3M"):
        csv = assert_figure_files(poly_figs, f"training_curves_size={size}")
        assert set(csv["n"]) == {1, 2, 4}
        assert sorted(csv[csv["n"] == 4]["head"].unique()) == [1, 2, 3, 4]
        assert len(csv) == 73 * sum(n * len([s for s in (0, 1) if (size, n, s) != ("3M", 4, 1)]) for n in (1, 2, 4))
    row = csv[(csv["n"] == 2) & (csv["seed"] == 0) & (csv["head"] == 2) & (csv["step"] == 300)].iloc[0]
    assert row["loss"] == pytest.approx(0.75 + 2.5 * math.exp(-2))
    assert row["tokens"] == 300 * 8192
    # Curves with more than 50 logged points are smoothed; the raw numbers stay in the CSV.
    assert row["loss_plotted"] != row["loss"] and abs(row["loss_plotted"] - row["loss"]) < 0.01


def test_induction_figures_use_the_valid_selected_checkpoint(induct_figs, lab_dir):
    assert {p.name for p in induct_figs.iterdir()} == {
        f"{name}.{ext}" for name in ("induction_vs_params", "induction_curves", "tokens_to_induction",
                                     "gain_over_ntp", "training_curves_size=1M", "training_curves_size=3M",
                                     "training_curves_size=10M")
        for ext in ("png", "pdf", "csv")}
    csv = assert_figure_files(induct_figs, "induction_vs_params")
    means = csv[csv["kind"] == "mean"].set_index(["size", "n"])
    for size in ("1M", "3M", "10M"):
        for n in (1, 2):
            # the checkpoint chosen on validation (step 150): test value = final + 0.01
            want = 100 * np.mean([induction_success(size, n, s) + 0.01 for s in (0, 1)])
            assert means.loc[(size, n), "induction_success_pct"] == pytest.approx(want)
            assert means.loc[(size, n), "non_embedding"] == NON_EMB[size]
    seeds = csv[csv["kind"] == "seed"]
    assert len(seeds) == 12 and (seeds["x_plotted"] != seeds["non_embedding"]).all()  # nudged apart by n

    frame = with_metrics(load_trials(str(lab_dir / "journal.log"), "induct"), "final")
    figures.induction_vs_params(frame, lab_dir / "induct_final")
    final = pd.read_csv(lab_dir / "induct_final" / "induction_vs_params.csv")
    row = final[(final["kind"] == "mean") & (final["size"] == "10M") & (final["n"] == 2)].iloc[0]
    assert row["induction_success_pct"] == pytest.approx(100 * np.mean([induction_success("10M", 2, s) for s in (0, 1)]))

    # --checkpoint best-by-test: the paper's choice, on the test metric (step 200: final + 0.025)
    out = lab_dir / "induct_by_test"
    assert main(["plot", str(lab_dir / "induct.yaml"), "--out", str(out), "--checkpoint", "best-by-test"]) == 0
    by_test = pd.read_csv(out / "induction_vs_params.csv")
    row = by_test[(by_test["kind"] == "mean") & (by_test["size"] == "1M") & (by_test["n"] == 1)].iloc[0]
    assert row["induction_success_pct"] == pytest.approx(100 * np.mean([induction_success("1M", 1, s) + 0.025
                                                                        for s in (0, 1)]))


def test_paper_lines_on_a_100m_panel(tmp_path):
    rows = []
    for n in (1, 2):
        rows.append({"size": "100M", "size_rank": 1e8, "n": n, "seed": 0, "trial": n, "budget_tokens": 1e6,
                     **{f"accuracy/ops={m}": 0.5 for m in range(1, 11)}})
    csv = figures.accuracy_vs_difficulty(pd.DataFrame(rows), tmp_path)
    paper = csv[csv["kind"] == "paper"].set_index(["n", "m"])["accuracy_pct"]
    assert paper[(1, 1)] == 87 and paper[(2, 6)] == 12 and len(paper) == 20
    assert_figure_files(tmp_path, "accuracy_vs_ops")


# ---------------- stats and report ----------------

def test_welch_and_permutation_test():
    r = stats.welch([0.5, 0.6], [0.2, 0.3])
    assert r.diff == pytest.approx(0.3) and r.t == pytest.approx(0.3 / math.sqrt(0.005)) and r.df == pytest.approx(2)
    p, p_min = stats.permutation_p([1.0, 1.1], [0.0, 0.1])
    assert p == pytest.approx(1 / 3) and p_min == pytest.approx(1 / 3)  # 2 of the 6 relabellings are as extreme
    p, _ = stats.permutation_p([1.0, 1.1, 1.2, 1.3], [0.0, 0.1, 0.2, 0.3])
    assert p == pytest.approx(2 / 70)
    p, _ = stats.permutation_p([0.0, 1.0], [0.0, 1.0])
    assert p == pytest.approx(1.0)
    assert stats.welch([0.5], [0.2, 0.3]).p is None


def test_report_tables_tests_figures_and_paper(lab_dir):
    out = lab_dir / "rep" / "poly.md"
    assert main(["report", str(lab_dir / "poly.yaml"), "--out", str(out)]) == 0
    text = out.read_text()
    # A table per metric with mean, spread and seeds, computed from the known metrics.
    vals = [poly_metrics("1M", 2, s)["accuracy/in_domain"] for s in (0, 1)]
    half = 12.7062047 * np.std(vals, ddof=1) / math.sqrt(2)  # t(0.975, 1 df) * s.e.
    line = (f"| 1M | 2 | {100 * np.mean(vals):.2f}% | [{100 * (np.mean(vals) - half):.2f}%, "
            f"{100 * (np.mean(vals) + half):.2f}%] | {100 * np.std(vals, ddof=1):.2f} | {100 * min(vals):.2f}% "
            f"| {100 * max(vals):.2f}% | 2 |")
    assert line in text
    assert f"| 3M | 4 | 1 | {100 * poly_p('3M', 4, 0):.1f} (n/a) |" in text  # the by-m table, one seed
    m3 = [100 * poly_p("1M", 1, s) ** 3 for s in (0, 1)]
    half = 12.7062047 * np.std(m3, ddof=1) / math.sqrt(2)
    assert f"{np.mean(m3):.1f} [{np.mean(m3) - half:.1f}, {np.mean(m3) + half:.1f}]" in text  # per-m interval
    # A legacy study (no validation split): the final checkpoint, said so.
    assert "test metrics from the **final checkpoint**" in text
    # Missing cells are stated.
    assert "11 of 12 runs finished; 1 missing" in text and "model.n=4,model.size=3M,train.seed=1 | RUNNING" in text
    # Significance where both cells have two seeds; not tested where one has one.
    assert stats.METHOD in text and "scipy" not in text
    assert "| accuracy/in_domain | 1M | 2 vs 1 |" in text
    assert "not tested (1 / 2 seeds; needs 2 each)" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| accuracy/in_domain | 1M | 2 vs 1 |"))
    # the seeds of this fake study move together, so Welch resolves it; the permutation test cannot (2 + 2 seeds)
    assert row.endswith("| 0.333 (min. 0.33) | 2 / 2 | resolved: n = 2 is higher |"), row
    # Figures embedded with links that resolve from the report.
    links = [ln.split("](")[1].rstrip(")") for ln in text.splitlines() if ln.startswith("![")]
    assert len(links) == 5 and all((out.parent / link).is_file() for link in links)
    # The paper's values beside ours, with the budget difference.
    ours = [100 * np.mean([poly_p("3M", n, s) for s in (0, 1) if (n, s) != (4, 1)]) for n in (1, 2, 4)]
    assert f"| 1 | 87 | 89 | 92 | {ours[0]:.1f} (2) | {ours[1]:.1f} (2) | {ours[2]:.1f} (1) |" in text
    assert "paper n=1" in text and "26.2B" in text and "8,738x more tokens" in text
    assert "We have no 100M run" in text


def test_report_for_induction_has_the_qualitative_reference(lab_dir):
    out = lab_dir / "rep" / "induct.md"
    assert main(["report", "--storage", str(lab_dir / "journal.log"), "--study", "induct", "--out", str(out)]) == 0
    text = out.read_text()
    assert "test metrics from the **checkpoint chosen on validation (valid/induction_success)**" in text
    assert "advantage disappears from 100M up" in text
    assert "### `valid/" not in text  # no table of validation metrics
    # tokens to induction: n = 1 at 1M never reaches 10%, n = 2 does at step 100 (819.2k tokens)
    assert "| 1M | 1 | 0 of 2 | – | n/a (1 seed) |" in text
    assert "| 1M | 2 | 2 of 2 | 819.2k | [819.2k, 819.2k] |" in text
    assert "### tokens to induction" in text and "### induction curves" in text
    assert "| 1M | 983k | 4.0 | 29.0 | +25.0 pp | n = 2 far better |" in text  # best = final + 1 point
    assert "| 10M |" in text and "### `induction_success` by head (%" in text
    # the memorization check names the one run that memorized, and no other
    section = text.split("## Memorization check")[1].split("\n## ")[0]
    assert "1 run(s) memorized" in section and "| 10M | 2 | 1 | 0.900 | 0.040 |" in section
    assert section.count("| 0.900 |") == 1 and "0.020 |" not in section


def test_metric_table_spread():
    f = pd.DataFrame({"size": ["1M"] * 3, "size_rank": [1e6] * 3, "n": [1, 1, 1], "seed": [0, 1, 2],
                      "accuracy/ood": [0.1, 0.2, 0.3]})
    half = 4.30265273 * 0.1 / math.sqrt(3)  # t(0.975, 2 df) * sd / sqrt(3)
    assert metric_table(f, "accuracy/ood").splitlines()[-1] == (
        f"| 1M | 1 | 20.00% | [{100 * (0.2 - half):.2f}%, {100 * (0.2 + half):.2f}%] | 10.00 | 10.00% | 30.00% | 3 |")


# ---------------- bad input through the CLI ----------------

@pytest.mark.parametrize("argv, message", [
    (["plot", "--storage", "JOURNAL", "--study", "nope"], "no study 'nope'"),
    (["plot", "--storage", "JOURNAL", "--study", "empty"], "study 'empty' has no finished trial"),
    (["report", "--storage", "JOURNAL", "--study", "copy"], "no figure for task copy"),
    (["plot", "--storage", "ROOT/missing.log", "--study", "poly"], "does not exist"),
    (["plot", "--storage", "postgresql://u:pw@127.0.0.1:1/x", "--study", "poly"], "cannot reach storage"),
    (["plot", "ROOT/nospec.yaml"], "spec file"),
    (["report", "ROOT"], "is a folder; give a sweep spec file"),
    (["plot", "JOURNAL"], "is not a sweep spec"),
    (["plot", "ROOT/named.yaml"], "unknown key 'name'"),  # the sweeps' own spec reader
    (["plot"], "give a sweep spec file"),
    (["plot", "--storage", "JOURNAL", "--study", "poly", "--checkpoint", "newest"], "invalid choice"),
    (["plot", "--storage", "JOURNAL", "--study", "poly", "--select-best", "train.lr"],
     "--select-best train.lr: not a swept key of this study (swept: model.n, model.size, train.seed)"),
    (["report", "--storage", "JOURNAL", "--study", "poly", "--select-best", "model.n"],
     "needs the validation objective valid/accuracy/in_domain"),
    (["report", "--storage", "JOURNAL", "--study", "copy", "--checkpoint", "best-by-test"],
     "stores no test-selected checkpoint metrics"),
])
def test_bad_input_is_one_line_exit_2(lab_dir, capsys, argv, message):
    out = lab_dir / "bad_out"
    argv = [a.replace("JOURNAL", str(lab_dir / "journal.log")).replace("ROOT", str(lab_dir)) for a in argv]
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()  # nothing written


# ---------------- defaults, custom sizes, docstrings ----------------

def test_spec_defaults_custom_sizes_and_relative_run_dirs(tmp_path, monkeypatch):
    """A spec without study/storage: study = file stem, storage runs/<study>/journal.log; custom shapes stay apart."""
    study_dir = tmp_path / "runs" / "tiny"
    study_dir.mkdir(parents=True)
    study = make_study(open_storage(str(study_dir / "journal.log"), create=True), "tiny", "induction",
                       {"model.d_model": [48, 96], "model.n": [1, 2]}, "induction_success")
    for d in (48, 96):
        for n in (1, 2):
            write_run(study_dir / f"d{d}n{n}", n, 0, steps=100)
            study.add_trial(create_trial(value=0.1 * n, user_attrs={
                "cell": {"model.d_model": d, "model.n": n}, "task": "induction",
                "config": {"task": {"name": "induction"}, "model": {"size": "custom", "d_model": d, "layers": 3,
                                                                    "n_heads": 2, "n": n},
                           "train": {"seed": 0, "steps": 100, "batch_tokens": 8192, "context": 256}},
                "metrics": {"induction_success": 0.1 * n + d / 1000},
                "params": {"total": 2 * 12 * 3 * d * d, "non_embedding": 12 * 3 * d * d},
                "run_dir": f"d{d}n{n}"}))  # relative to the study folder, not to the current one
    (tmp_path / "tiny.yaml").write_text("task: induction\ngrid: {n: [1, 2]}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["report", "tiny.yaml"]) == 0
    figs = study_dir / "figures"
    csv = pd.read_csv(figs / "induction_vs_params.csv")
    assert set(csv["size"]) == {"custom d48 L3", "custom d96 L3"}
    small = csv[(csv["kind"] == "mean") & (csv["size"] == "custom d48 L3")].set_index("n")
    assert small.loc[2, "induction_success_pct"] == pytest.approx(100 * (0.2 + 0.048))
    assert_figure_files(figs, "training_curves_size=custom_d48_L3")
    text = (study_dir / "report.md").read_text()
    assert "![training_curves_size=custom_d96_L3](figures/training_curves_size=custom_d96_L3.png)" in text
    assert "819.2k training tokens" in text  # 100 steps x 8192 tokens


MODULES = (draw, figures, induction_figures, plotkit, report_paper, runs, selection, stats)


def test_every_public_function_has_a_docstring_with_an_example():
    import inspect

    from analysis import cli, loader, paper, report

    for module in MODULES + (loader, report, paper, cli):
        for name, obj in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != module.__name__:
                continue
            if name.startswith("cmd_"):
                continue  # subcommand handlers: their examples are in --help
            assert obj.__doc__ and "Example" in obj.__doc__, f"{module.__name__}.{name}"


def test_docstring_examples_run():
    import doctest

    from analysis import cli, loader, paper, report

    for module in MODULES + (loader, report, paper, cli):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__


def test_search_trials_best_per_cell_and_missing_units(tmp_path, capsys):
    """Cells with several search trials (run_key 'n=1,seed=0,trial=i'): figures show each cell's best trial."""
    journal = tmp_path / "runs" / "search" / "journal.log"
    journal.parent.mkdir(parents=True)
    study = make_study(open_storage(str(journal), create=True), "search", "induction",
                       {"model.n": [1, 2], "train.seed": [0]}, "induction_success")
    values = {(1, 0): 0.10, (1, 1): 0.30, (2, 0): 0.50, (2, 1): 0.20}
    for (n, i), v in values.items():
        attrs = trial_attrs("induction", "1M", n, 0, {"induction_success": v}, tmp_path / "none")
        attrs.update(cell_key=f"n={n},seed=0", run_key=f"n={n},seed=0,trial={i}", cell_trial=i)
        attrs["cell"] = {"model.n": n, "train.seed": 0}
        study.add_trial(create_trial(value=v, user_attrs=attrs))
    study.enqueue_trial({}, user_attrs={"cell": {"model.n": 2, "train.seed": 0}, "cell_key": "n=2,seed=0",
                                        "run_key": "n=2,seed=0,trial=2", "cell_trial": 2})
    data = load_study(str(journal), "search")
    assert len(data.frame) == 4 and data.missing["run_key"].tolist() == ["n=2,seed=0,trial=2"]
    out = tmp_path / "figs"
    assert main(["plot", "--storage", str(journal), "--study", "search", "--out", str(out),
                 "--checkpoint", "final"]) == 0
    csv = pd.read_csv(out / "induction_vs_params.csv")
    assert csv[csv["kind"] == "seed"].set_index("n")["induction_success_pct"].to_dict() == \
        pytest.approx({1: 30.0, 2: 50.0})
    printed = capsys.readouterr().out
    assert "4 of 5 runs finished" in printed and "n=2,seed=0,trial=2 (waiting)" in printed
    assert "not drawn: training_curves" in printed  # no run folders: said, not fatal


# ---------------- report destinations and missing run folders ----------------

@pytest.mark.parametrize("where, message", [
    ("FILE/sub/report.md", "is a file, not a folder"),
    ("FILE/report.md", "FILE is a file, not a folder"),
    ("DIR", "is a folder; give the report's file name"),
    ("/proc/mtplab/report.md", "cannot write in /proc"),
])
def test_report_destination_checked_before_any_work(lab_dir, tmp_path, capsys, where, message):
    (tmp_path / "FILE").write_text("keep")
    (tmp_path / "DIR").mkdir()
    out = where if where.startswith("/") else str(tmp_path / where)
    assert main(["report", "--storage", str(lab_dir / "journal.log"), "--study", "poly", "--out", out]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR", "FILE"]  # nothing written, no .tmp left
    assert not any((tmp_path / "DIR").iterdir()) and (tmp_path / "FILE").read_text() == "keep"


def test_report_names_run_folders_that_were_deleted(lab_dir, tmp_path, capsys):
    import shutil

    gone = lab_dir / "poly" / "1M-n2-s0"
    backup = tmp_path / "backup"
    shutil.copytree(gone, backup)
    shutil.rmtree(gone)
    try:
        out = tmp_path / "r" / "report.md"
        assert main(["report", "--storage", str(lab_dir / "journal.log"), "--study", "poly", "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "run folders missing for 1 finished run(s)" in printed and "1M-n2-s0" in printed
        text = out.read_text()
        assert "run folder missing for" in text and "1M-n2-s0" in text
        assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]
    finally:
        shutil.copytree(backup, gone)


def test_paper_section_names_every_knob_that_differs_from_the_paper():
    frame = pd.DataFrame({"task.k": [3, 3], "task.p": [7, 7], "task.ops": ["['neg', 'add']", "['neg', 'add']"],
                          "task.train_max_ops": [5, 5], "task.test_per_op": [2000, 2000]})
    assert report_paper._task_differences(frame) == [
        "`task.k` = 3 (paper: 5)", "`task.ops` = neg,add (paper: neg,add,mul,compose)"]
