"""The analysis room's newer parts: checkpoints chosen on validation, best-of-K learning rates, intervals and
verdicts, the induction milestone figures, the size ladder and the task's labels.

The studies follow the trainer/sweep contract: trial ``best_metrics`` (the checkpoint chosen on
``valid/<objective>``, with the ``valid/...`` metrics in it), ``best_by_test_metrics`` (the paper's choice),
``milestones``; run folders with ``eval.json`` histories. Every number asserted is computed from how the
study was built.
"""

import math
import os
import tempfile

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))
os.environ["MPLBACKEND"] = "Agg"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from optuna.trial import create_trial  # noqa: E402
from test_analysis import (BUDGET, NON_EMB, SHAPE, assert_figure_files, build_induction,  # noqa: E402
                           induction_success, make_study, write_eval)

from analysis import induction_figures, plotkit, stats  # noqa: E402
from analysis.loader import load_study, metric_columns, size_rank  # noqa: E402
from analysis.report import significance_table  # noqa: E402
from lab.cli import main  # noqa: E402
from lab.config import LADDER, SIZES, nominal_count  # noqa: E402
from sweeps.storage import open_storage  # noqa: E402

LRS = (1e-3, 3e-3, 1e-2)
# validation objective at each run's selected checkpoint: n = 1 prefers 3e-3, n = 2 prefers 1e-2, except seed 1 of n = 2
VALID = {1: {1e-3: 0.30, 3e-3: 0.50, 1e-2: 0.40}, 2: {1e-3: 0.35, 3e-3: 0.45, 1e-2: 0.60}}
CHOSEN = {(1, 0): 3e-3, (1, 1): 3e-3, (2, 0): 1e-2, (2, 1): 1e-3}


def valid_value(n, lr, seed):
    return 0.70 if (n, lr, seed) == (2, 1e-3, 1) else VALID[n][lr]


def chosen_test_value(n, lr, seed):
    """Test in-domain accuracy at the valid-selected checkpoint (final: 0.05 less; best by test: 0.02 more)."""
    return valid_value(n, lr, seed) - 0.1 + 0.01 * seed


def poly_metrics(t, *, valid=None):
    out = {f"accuracy/ops={m}": t * (1 - 0.1 * m) for m in range(1, 5)}
    out.update({"accuracy/in_domain": t, "accuracy/ood": t / 2})
    if valid is not None:
        out.update({"valid/accuracy/in_domain": valid, "valid/accuracy/ood": valid / 2})
    return out


def build_lr_study(storage, name="lr", *, with_valid=True):
    """polyarith, 1M, n in {1, 2}, seeds {0, 1}, lr in LRS: 12 runs, trained on m <= 3 and tested on m <= 4."""
    grid = {"model.n": [1, 2], "model.size": ["1M"], "train.seed": [0, 1], "train.lr": list(LRS)}
    study = make_study(storage, name, "polyarith", grid, "accuracy/in_domain")
    d, layers, heads = SHAPE["1M"]
    for n in (1, 2):
        for seed in (0, 1):
            for lr in LRS:
                t, v = chosen_test_value(n, lr, seed), valid_value(n, lr, seed)
                valid = v if with_valid else None
                cell = {"model.n": n, "model.size": "1M", "train.seed": seed, "train.lr": lr}
                attrs = {
                    "cell": cell, "cell_key": ",".join(f"{k}={cell[k]}" for k in sorted(cell)), "task": "polyarith",
                    "config": {"task": {"name": "polyarith", "train_min_ops": 1, "train_max_ops": 3,
                                        "test_min_ops": 1, "test_max_ops": 4},
                               "model": {"size": "1M", "d_model": d, "layers": layers, "n_heads": heads, "n": n},
                               "train": {"seed": seed, "tokens": BUDGET, "steps": 0, "batch_tokens": 8192,
                                         "context": 256, "lr": lr}},
                    "metrics": poly_metrics(t - 0.05, valid=None if valid is None else valid - 0.05),
                    "best_metrics": poly_metrics(t, valid=valid), "best_step": 100,
                    "best_by_test_metrics": poly_metrics(t + 0.02, valid=None if valid is None else valid - 0.01),
                    "best_by_test_step": 120, "milestones": {},
                    "params": {"total": 2 * NON_EMB["1M"], "non_embedding": NON_EMB["1M"]},
                    "run_dir": None,
                }
                study.add_trial(create_trial(value=t - 0.05, user_attrs=attrs))
    return study


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    storage = open_storage(str(root / "journal.log"), create=True)
    build_lr_study(storage)
    build_lr_study(storage, "novalid", with_valid=False)
    build_induction(root, storage)
    (root / "lr.yaml").write_text(f"study: lr\ntask: polyarith\ngrid: {{n: [1]}}\nstorage: {root / 'journal.log'}\n")
    return root


def csv_means(path, metric="accuracy/in_domain"):
    csv = pd.read_csv(path)
    return csv[(csv["kind"] == "mean") & (csv["metric"] == metric)].set_index("n")["accuracy_pct"].to_dict()


# ---------------- best of K learning rates, chosen on validation ----------------

def test_select_best_lr_report_uses_the_valid_choice_and_its_test_metrics(lab, capsys):
    out = lab / "rep" / "lr.md"
    assert main(["report", str(lab / "lr.yaml"), "--select-best", "train.lr", "--out", str(out)]) == 0
    text = out.read_text()
    sentence = "best of 3 learning rates per (n, size, seed), chosen on validation"
    assert sentence in text and "checkpoint chosen on validation (valid/accuracy/in_domain)" in text
    # the selection table: the lr each (n, seed) chose, by its validation objective
    for (n, seed), lr in CHOSEN.items():
        assert f"| 1M | {n} | {seed} | {lr:g} | {valid_value(n, lr, seed):.4g} | 3 |" in text
    # the tables report the chosen runs' TEST metrics at their valid-selected checkpoints
    for n in (1, 2):
        vals = [chosen_test_value(n, CHOSEN[(n, s)], s) for s in (0, 1)]
        assert f"| 1M | {n} | {100 * np.mean(vals):.2f}% |" in text
    csv = csv_means(lab / "rep" / "figures" / "accuracy_vs_size.csv")
    assert csv == pytest.approx({n: 100 * np.mean([chosen_test_value(n, CHOSEN[(n, s)], s) for s in (0, 1)])
                                 for n in (1, 2)})
    assert "variant" not in text  # one run per cell group: no lr series left


def test_select_best_short_key_and_other_checkpoints(lab, capsys):
    for checkpoint, shift in (("final", -0.05), ("best-by-test", 0.02)):
        out = lab / f"figs_{checkpoint}"
        assert main(["plot", str(lab / "lr.yaml"), "--select-best", "lr", "--checkpoint", checkpoint,
                     "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "selected: best of 3 learning rates per (n, size, seed), chosen on validation" in printed
        # the same runs (chosen on validation), their metrics at the other checkpoint
        assert csv_means(out / "accuracy_vs_size.csv") == pytest.approx(
            {n: 100 * np.mean([chosen_test_value(n, CHOSEN[(n, s)], s) + shift for s in (0, 1)]) for n in (1, 2)})
    assert "paper-faithful" in printed


def test_without_select_best_each_lr_is_its_own_series(lab, capsys):
    out = lab / "rep_all" / "lr.md"
    assert main(["report", str(lab / "lr.yaml"), "--out", str(out)]) == 0
    figs = out.parent / "figures"
    for lr in LRS:
        name = f"accuracy_vs_size_train.lr={lr:g}"
        assert_figure_files(figs, name)
        assert csv_means(figs / f"{name}.csv") == pytest.approx(
            {n: 100 * np.mean([chosen_test_value(n, lr, s) for s in (0, 1)]) for n in (1, 2)})
    text = out.read_text()
    assert "| size | variant | n | mean |" in text
    vals = [chosen_test_value(1, 1e-3, s) for s in (0, 1)]
    assert f"| 1M | train.lr=0.001 | 1 | {100 * np.mean(vals):.2f}% |" in text
    assert "| accuracy/in_domain | 1M | train.lr=0.01 | 2 vs 1 |" in text


@pytest.mark.parametrize("argv, message", [
    (["--select-best", "train.warmup"], "--select-best train.warmup: not a swept key of this study"),
    (["--study", "novalid", "--select-best", "train.lr"],
     "--select-best train.lr needs the validation objective valid/accuracy/in_domain at each run's selected "
     "checkpoint, and 12 of 12 runs lack it"),
])
@pytest.mark.parametrize("command", ["plot", "report"])
def test_select_best_bad_input_is_one_line_exit_2_and_writes_nothing(lab, capsys, command, argv, message):
    out = lab / "bad" / ("r.md" if command == "report" else "figs")
    assert main([command, "--storage", str(lab / "journal.log"), "--study", "lr", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (lab / "bad").exists()


# ---------------- the induction figures from the run folders ----------------

def test_induction_curves_and_tokens_to_induction(lab, capsys):
    out = lab / "induct_figs"
    assert main(["plot", "--storage", str(lab / "journal.log"), "--study", "induct", "--out", str(out)]) == 0
    curves = assert_figure_files(out, "induction_curves")
    seeds = curves[curves["kind"] == "seed"]
    assert len(seeds) == 12 * 5  # every eval of every run
    row = seeds[(seeds["size"] == "3M") & (seeds["n"] == 2) & (seeds["seed"] == 1) & (seeds["step"] == 200)].iloc[0]
    assert row["induction_success_pct"] == pytest.approx(100 * (induction_success("3M", 2, 1) + 0.025))
    assert row["tokens"] == 200 * 8192
    mean = curves[(curves["kind"] == "mean") & (curves["size"] == "1M") & (curves["n"] == 2) & (curves["step"] == 150)]
    assert mean["induction_success_pct"].iloc[0] == pytest.approx(
        100 * np.mean([induction_success("1M", 2, s) + 0.01 for s in (0, 1)]))
    assert mean["seeds"].iloc[0] == 2

    tti = assert_figure_files(out, "tokens_to_induction")
    means = tti[tti["kind"] == "mean"].set_index(["size", "n"])
    for size in ("1M", "3M"):  # n = 1 stays below 10%; n = 2 crosses at step 100
        assert means.loc[(size, 1), ["runs", "runs_reached", "not_reached"]].tolist() == [2, 0, 2]
        assert math.isnan(means.loc[(size, 1), "tokens"])
        assert means.loc[(size, 2), "tokens"] == 100 * 8192 and means.loc[(size, 2), "not_reached"] == 0
    assert means.loc[("10M", 1), "runs_reached"] == 2
    seed_rows = tti[tti["kind"] == "seed"].set_index(["size", "n", "seed"])
    assert seed_rows.loc[("3M", 1, 1), "source"] == "eval.json"  # no milestones in that trial
    assert seed_rows.loc[("3M", 1, 0), "source"] == "trial"
    assert str(seed_rows.loc[("1M", 1, 0), "reached"]) == "False"


def test_milestones_recomputed_from_the_history_when_none_are_stored(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    history = [{"step": s, "tokens": s * 100, "epoch": 0.1, "metrics": {"induction_success": v}}
               for s, v in ((1, 0.0), (2, 0.05), (3, 0.12), (4, 0.3))]
    write_eval(run, history, "induction_success", milestones={})  # eval.json of a run with no stored milestones
    frame = pd.DataFrame({"size": ["1M"], "n": [2], "seed": [0], "trial": [0], "run_dir": ["run"],
                          "non_embedding": [1e6], "budget_tokens": [400]})
    ms = induction_figures.run_milestones(frame, run_root=tmp_path)  # a relative run_dir, under run_root
    assert ms[["tokens", "reached", "source"]].values.tolist() == [[300.0, True, "history"]]
    assert induction_figures.milestones_from_history(history)["tokens_to_half_best"] == 400.0  # first eval >= 0.3 / 2


def test_loader_reads_checkpoints_and_milestones(lab):
    data = load_study(str(lab / "journal.log"), "induct")
    f = data.frame
    assert {"best:valid/induction_success", "best_by_test:induction_success", "milestone:tokens_to_induction",
            "best_by_test_step"} <= set(f.columns)
    row = f[(f["size"] == "1M") & (f["n"] == 1) & (f["seed"] == 0)].iloc[0]
    assert row["milestone:tokens_to_induction"] == math.inf  # recorded as never reached
    assert row["best_step"] == 150 and row["best_by_test_step"] == 200
    assert math.isnan(f[(f["size"] == "3M") & (f["n"] == 1) & (f["seed"] == 1)]["milestone:tokens_to_induction"].iloc[0])
    cols = metric_columns(f)
    assert "induction_success" in cols and not any(c.startswith(("best", "milestone")) for c in cols)


# ---------------- statistics without scipy ----------------

def _t_pdf(x, df):
    return math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi) * \
        (1 + x * x / df) ** (-(df + 1) / 2)


@pytest.mark.parametrize("df, t975", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (5, 2.5706), (10, 2.2281),
                                      (30, 2.0423), (math.inf, 1.9600)])
def test_t_quantile_matches_the_table(df, t975):
    assert stats.t_quantile(0.975, df) == pytest.approx(t975, abs=1e-4)
    assert stats.t_quantile(0.025, df) == pytest.approx(-t975, abs=1e-4)


@pytest.mark.parametrize("t, df", [(0.7, 1.0), (2.1, 2.7), (3.5, 4.4), (1.2, 17.3)])
def test_t_tail_matches_numerical_integration(t, df):
    x = np.linspace(t, t + 4000, 2_000_001)
    tail = 2 * np.trapezoid([_t_pdf(v, df) for v in x[:200_001]], x[:200_001])  # the bulk, finely
    far = 2 * np.trapezoid([_t_pdf(v, df) for v in x[200_001::100]], x[200_001::100])  # the far tail, coarsely
    assert stats.t_sf2(t, df) == pytest.approx(tail + far, rel=2e-3)


def test_intervals_welch_and_verdicts():
    mean, lo, hi, k = stats.mean_interval([0.1, 0.2, 0.3, 0.6])
    half = 3.1824463 * np.std([0.1, 0.2, 0.3, 0.6], ddof=1) / 2
    assert (mean, k) == (pytest.approx(0.3), 4) and (lo, hi) == (pytest.approx(0.3 - half), pytest.approx(0.3 + half))
    assert all(math.isnan(x) for x in stats.mean_interval([0.4])[1:3])

    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0]
    r = stats.welch(a, b)
    se = math.sqrt(1 / 3 + 4 / 3)
    df = (5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)
    assert r.se == pytest.approx(se) and r.df == pytest.approx(df)
    assert (r.hi - r.lo) / 2 == pytest.approx(stats.t_quantile(0.975, df) * se)
    assert r.p == pytest.approx(stats.t_sf2(-4 / se, df)) and (r.p < 0.05) == r.resolved
    assert r.p_perm == pytest.approx(0.1) and r.p_min == pytest.approx(0.1)  # exact: 2 of 20 relabellings

    noisy = pd.DataFrame({"size": ["1M"] * 4, "size_rank": [1e6] * 4, "n": [1, 1, 2, 2],
                          "accuracy/ood": [0.10, 0.30, 0.15, 0.40]})
    text, tested = significance_table(noisy, ["accuracy/ood"])
    assert tested and text.splitlines()[-1].endswith("| 2 / 2 | not resolved at this power (2 seeds each) |")


# ---------------- the size ladder and the task's labels ----------------

def test_ladder_comes_from_lab_config_and_sorts_new_sizes():
    assert set(LADDER) == {s for s in SIZES if nominal_count(s) is not None}
    assert list(LADDER.values()) == sorted(LADDER.values())
    assert nominal_count("0.1M") == 1e5 and nominal_count("0.3M") == 3e5 and nominal_count("1B") == 1e9
    if "0.1M" in SIZES:
        assert list(LADDER)[:2] == ["0.1M", "0.3M"]
        assert size_rank("0.1M", None) < size_rank("0.3M", None) < size_rank("1M", None)


def test_in_domain_range_and_titles_come_from_the_task_config(lab, capsys):
    out = lab / "figs_meta"
    assert main(["plot", str(lab / "lr.yaml"), "--select-best", "train.lr", "--out", str(out)]) == 0
    ops = pd.read_csv(out / "accuracy_vs_ops.csv")
    regions = ops[ops["kind"] == "mean"].groupby("m")["region"].first().to_dict()
    assert regions == {1: "in-domain", 2: "in-domain", 3: "in-domain", 4: "out-of-domain"}  # train_max_ops = 3
    frame = pd.DataFrame({"task": ["polyarith"], "task.train_min_ops": [1], "task.train_max_ops": [3]})
    assert plotkit.metric_label("accuracy/in_domain", frame) == "in-domain accuracy (m ≤ 3)"
    assert plotkit.metric_label("accuracy/ood", frame) == "out-of-domain accuracy (m > 3)"
