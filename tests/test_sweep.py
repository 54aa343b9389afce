"""Sweeps: spec validation, exactly-once cells under concurrency, kill -9 and resume, status.

Real processes, real Optuna journal storage, tiny models. PostgreSQL is in
tests/test_sweep_pg.py.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lab.cli import main
from lab.errors import UserError

REPO = Path(__file__).resolve().parents[1]

TINY = """\
description: tiny test sweep
task: {name: polyarith, train_examples: 500, test_per_op: 3}
grid: {n: [1, 2], seed: [0, 1]}
fixed: {model.size: custom, model.d_model: 32, model.layers: 3, model.n_heads: 2,
        train.progress: false, train.log_interval: 1, train.warmup_steps: 1, train.threads: 1,
        train.eval_interval: 1000}
budget: {steps: 3, batch_tokens: 256, context: 64}
heartbeat_seconds: 1
grace_seconds: 20
"""


@pytest.fixture
def lab_dir(tmp_path, monkeypatch, tmp_path_factory):
    """A working folder (runs/ goes here) and a dataset cache shared by this file's tests.

    The tiny specs train with one torch thread (much faster on a busy 2-core
    machine); the process-wide thread count is restored afterwards.
    """
    import torch

    cache = tmp_path_factory.getbasetemp() / "sweep-cache"
    monkeypatch.setenv("MTPLAB_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def sweep_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "lab", "sweep", *map(str, args)]


def env() -> dict:
    e = dict(os.environ)
    e.pop("CUDA_VISIBLE_DEVICES", None)  # the --gpus test checks what the workers get
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def load(journal: Path, study: str):
    import optuna

    from sweeps.storage import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(str(journal)))


def complete_per_cell(study) -> dict:
    from optuna.trial import TrialState

    counts = {}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            counts[t.user_attrs["run_key"]] = counts.get(t.user_attrs["run_key"], 0) + 1
    return counts


def assert_clean_logs(folder: Path) -> None:
    for log in folder.glob("*.log"):
        text = log.read_text()
        assert "Traceback" not in text, f"{log}:\n{text}"
        assert "locked" not in text.lower(), f"{log}:\n{text}"


# ---------------- spec validation ----------------

BAD_SPECS = {
    "unknown top-level key": ("task: polyarith\ngird: {n: [1]}\n", "gird"),
    "unknown config key": ("task: polyarith\ngrid: {model.foo: [1]}\n", "model.foo"),
    "bad value": ("task: polyarith\ngrid: {n: [1, two]}\n", "model.n"),
    "bad cell": ("task: polyarith\ngrid: {n: [1, 9], size: [1M]}\n", "n=9"),
    "unknown budget key": ("task: polyarith\ngrid: {n: [1]}\nbudget: {epochs: 3}\n", "budget.epochs"),
    "malformed yaml": ("task: polyarith\ngrid: {n: [1, 2\n", "malformed YAML"),
    "unknown task": ("task: nosuchtask\ngrid: {n: [1]}\n", "not registered"),
    "bad search": ("task: polyarith\ngrid: {n: [1]}\nsearch: {trials: 2, space: {train.lr: {low: 1, high: 0.1}}}\n",
                   "search.space.train.lr"),
    "swept and fixed": ("task: polyarith\ngrid: {n: [1]}\nfixed: {model.n: 2}\n", "model.n"),
    "objective without direction": ("task: polyarith\ngrid: {n: [1]}\nobjective: accuracy/ood\n", "direction"),
    "absurd budget": ("task: polyarith\ngrid: {n: [1]}\nbudget: {steps: 1e30}\n", "beyond the 1e+13 this lab accepts"),
    "bad lr": ("task: polyarith\ngrid: {n: [1]}\nbudget: {lr: .nan}\n", "train.lr must be a positive number"),
    "objective the runs lack": ("task: polyarith\ngrid: {n: [1]}\nobjective: accuracy/ops=11\ndirection: maximize\n",
                                "'accuracy/ops=11' is not a metric of these runs"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_one_line_exit_2_and_creates_nothing(lab_dir, capsys, case):
    text, needle = BAD_SPECS[case]
    spec = lab_dir / "bad.yaml"
    spec.write_text(text)
    assert main(["sweep", "run", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and str(spec) in err, err
    assert not (lab_dir / "runs").exists()  # no study, no storage file


def test_objectives_the_runs_have_are_accepted(lab_dir):
    from sweeps.spec import load_spec

    for objective in ("valid/accuracy/ops=10", "digit_accuracy/ood", "loss/heldout", "future_acc/k=2/marginal",
                      "agreement/tokens_per_forward"):
        spec = lab_dir / "ok.yaml"
        spec.write_text(f"task: polyarith\ngrid: {{n: [1]}}\nobjective: {objective}\ndirection: maximize\n")
        assert load_spec(spec).objective == objective


def test_a_folder_given_as_the_spec_is_one_line(lab_dir, capsys):
    (lab_dir / "specs").mkdir()
    for cmd in ("run", "status"):
        assert main(["sweep", cmd, str(lab_dir / "specs")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is a folder; give a sweep spec file" in err, err


def test_unreachable_storage_is_one_line_exit_2(lab_dir, capsys):
    spec = write(lab_dir / "tiny.yaml", TINY)
    assert main(["sweep", "run", str(spec), "--storage", "postgresql://nobody:pw@127.0.0.1:1/nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach storage" in err and "pw" not in err, err
    assert main(["sweep", "run", str(spec), "--storage", "mysql://x@h/db"]) == 2
    assert "unsupported storage" in capsys.readouterr().err
    assert main(["sweep", "status", str(spec)]) == 2  # no study yet: status creates nothing
    assert "no study 'tiny'" in capsys.readouterr().err
    assert not (lab_dir / "runs").exists()


def test_shipped_specs_validate_and_say_their_budget():
    from generators import registry
    from sweeps.spec import cells, load_spec

    folder = REPO / "sweeps"
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    assert {"quickstart", "induction", "induction-cpu", "arithmetic", "arithmetic-cpu"} <= set(names)
    for name in names:
        text = (folder / f"{name}.yaml").read_text()
        assert "paper" in text.split("description:")[0].lower(), f"{name}: the comment must compare with the paper"
        try:
            spec = load_spec(folder / f"{name}.yaml")
        except UserError as e:
            assert name.startswith("induction") and "not registered" in str(e), e
            with pytest.raises(UserError):
                registry.get("induction")
            continue
        assert "paper" in spec.description.lower() and cells(spec)
    quick = load_spec("quickstart")
    assert [c.key for c in cells(quick)] == ["n=1,size=1M,seed=0", "n=2,size=1M,seed=0", "n=4,size=1M,seed=0"]
    arith = load_spec(folder / "arithmetic.yaml")
    assert arith.grid["model.n"] == [1, 2, 4] and arith.grid["model.size"] == ["30M", "100M"]
    assert arith.fixed["train.context"] == 1024 and len(cells(arith)) == 12


def test_cells_expand_in_file_order_with_stable_keys(lab_dir):
    from sweeps.spec import cells, load_spec

    spec = load_spec(write(lab_dir / "g.yaml", """\
        task: polyarith
        grid: {size: [1M], n: [1, 2], model.head_kind: [parallel, causal], train.lr: [1e-3]}
        search: {trials: 2, space: {train.warmup_steps: {low: 0, high: 10, int: true}}}
        """))
    keys = [c.run_key for c in cells(spec)]
    assert keys[0] == "size=1M,n=1,head_kind=parallel,lr=0.001,trial=0"
    assert len(keys) == len(set(keys)) == 8 and keys[4].endswith("trial=1")
    assert spec.grid["train.lr"] == [0.001]  # YAML's "1e-3" string typed by the config dataclass


def test_one_table_of_short_names_for_train_flags_and_specs(lab_dir):
    from lab.cli import TRAIN_FLAGS
    from lab.shorthands import SHORTHANDS
    from sweeps.spec import BUDGET_KEYS, load_spec

    assert {**TRAIN_FLAGS, "heads_on_top": "model.heads_on_top"} == SHORTHANDS
    assert BUDGET_KEYS.items() <= SHORTHANDS.items()
    spec = load_spec(write(lab_dir / "short.yaml", "task: polyarith\ngrid: {lr: [1.0e-3]}\nfixed: {eval_examples: 5}\n"))
    assert spec.grid == {"train.lr": [0.001]} and spec.fixed["train.eval_examples"] == 5


def test_only_the_protocol_touches_optuna_private_attributes():
    import re

    for path in [*(REPO / "sweeps").glob("*.py"), *(REPO / "analysis").glob("*.py")]:
        if path.name != "protocol.py":
            assert not re.search(r"\._(storage|trial_id|lock|file_path)\b", path.read_text()), path


# ---------------- running ----------------

def test_run_status_attrs_and_changed_spec(lab_dir, capsys):
    spec = write(lab_dir / "tiny.yaml", TINY.replace("seed: [0, 1]", "seed: [0]"))
    assert main(["sweep", "run", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "[2/2] n=2,seed=0 done accuracy/in_domain=" in out
    assert "wrote runs/tiny/report.md" in out and "runs/tiny/figures" in out  # the main job writes them itself
    assert (lab_dir / "runs/tiny/report.md").exists() and list((lab_dir / "runs/tiny/figures").glob("*.png"))
    study = load(lab_dir / "runs/tiny/journal.log", "tiny")
    assert complete_per_cell(study) == {"n=1,seed=0": 1, "n=2,seed=0": 1}
    t = study.best_trial
    for key in ("cell", "cell_key", "task", "config", "metrics", "best_metrics", "best_step", "params", "tokens_seen",
                "wall_seconds", "device", "env", "run_dir", "worker", "host"):
        assert key in t.user_attrs, key
    assert t.user_attrs["env"]["optuna"] and "git_commit" in t.user_attrs["env"] and "torch" in t.user_attrs["env"]
    assert set(t.user_attrs["params"]) == {"total", "non_embedding"}
    assert t.params["model.n"] in (1, 2) and t.user_attrs["cell"]["model.n"] == t.params["model.n"]
    assert Path(t.user_attrs["run_dir"]) == (lab_dir / "runs/tiny" / t.user_attrs["cell_key"]).resolve()
    for key in ("spec", "task", "objective", "direction", "spec_path"):
        assert key in study.user_attrs, key

    # Running it again trains nothing and prints the same table.
    assert main(["sweep", "run", str(spec), "--no-report"]) == 0
    assert "done" in capsys.readouterr().out and len(study.get_trials()) == 2

    assert main(["sweep", "status", str(spec)]) == 0
    status = capsys.readouterr().out
    assert "2 done, 0 running, 0 failed, 0 pending of 2 cells" in status

    # A grown grid queues only the new cells; a changed budget is refused without touching the study.
    spec.write_text(TINY.replace("n: [1, 2]", "n: [1]"))
    assert main(["sweep", "run", str(spec), "--no-report"]) == 0
    assert complete_per_cell(load(lab_dir / "runs/tiny/journal.log", "tiny")) == {
        "n=1,seed=0": 1, "n=2,seed=0": 1, "n=1,seed=1": 1}
    capsys.readouterr()
    spec.write_text(TINY.replace("steps: 3", "steps: 5"))
    assert main(["sweep", "run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "different spec" in err and "train.steps: 3 -> 5" in err
    study = load(lab_dir / "runs/tiny/journal.log", "tiny")
    assert len(study.get_trials()) == 3 and study.user_attrs["spec"]["grid"]["train.seed"] == [0, 1]


def test_search_space_trials_get_their_own_folders(lab_dir):
    spec = write(lab_dir / "search.yaml", TINY.replace("grid: {n: [1, 2], seed: [0, 1]}", "grid: {n: [1]}")
                 + "search: {trials: 2, sampler: random, space: {train.lr: {low: 1e-4, high: 1e-2, log: true}}}\n")
    assert main(["sweep", "run", str(spec), "--no-report"]) == 0
    study = load(lab_dir / "runs/search/journal.log", "search")
    assert complete_per_cell(study) == {"n=1,trial=0": 1, "n=1,trial=1": 1}
    lrs = {t.user_attrs["run_key"]: t.params["train.lr"] for t in study.trials}
    for key, lr in lrs.items():
        stored = json.loads((lab_dir / "runs/search" / key / "config.json").read_text())
        assert stored["train"]["lr"] == lr and 1e-4 <= lr <= 1e-2
    assert len(set(lrs.values())) == 2


def test_every_eval_reaches_optuna_as_an_intermediate_value(lab_dir):
    spec = write(lab_dir / "curves.yaml", TINY.replace("grid: {n: [1, 2], seed: [0, 1]}", "grid: {n: [2]}")
                 .replace("train.eval_interval: 1000", "train.eval_interval: 1"))
    assert main(["sweep", "run", str(spec), "--no-report"]) == 0
    (t,) = load(lab_dir / "runs/curves/journal.log", "curves").get_trials()
    history = json.loads((Path(t.user_attrs["run_dir"]) / "eval.json").read_text())["history"]
    key = "valid/accuracy/in_domain" if "valid/accuracy/in_domain" in history[-1]["metrics"] else "accuracy/in_domain"
    assert t.intermediate_values == {e["step"]: e["metrics"][key] for e in history}
    assert sorted(t.intermediate_values) == [1, 2, 3] and t.value == t.intermediate_values[3]
    for attr in ("best_by_test_metrics", "best_by_test_step", "milestones", "selection"):
        assert attr in t.user_attrs, attr


def test_journal_pop_is_atomic(tmp_path):
    """Optuna's pop of a WAITING trial, the primitive claims rest on, never hands one trial to two processes."""
    import optuna

    from sweeps.storage import open_storage

    journal = tmp_path / "journal.log"
    study = optuna.create_study(study_name="pop", storage=open_storage(str(journal), create=True))
    for i in range(24):
        study.enqueue_trial({}, user_attrs={"i": i})
    script = textwrap.dedent(f"""
        import json, sys, optuna
        from sweeps.storage import open_storage
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name="pop", storage=open_storage({str(journal)!r}))
        got = []
        while True:
            tid = study._pop_waiting_trial_id()
            if tid is None:
                break
            got.append(tid)
        print(json.dumps(got))
        """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env()) for _ in range(4)]
    popped = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        popped += json.loads(out)
    assert sorted(popped) == sorted(t._trial_id for t in study.get_trials())  # each exactly once


# ---------------- a damaged journal ----------------

def _study_on_disk(lab_dir):
    """A study with its spec attributes and 2 queued cells in runs/tiny/journal.log (no training)."""
    from sweeps.protocol import queue_cells
    from sweeps.spec import cells, load_spec
    from sweeps.storage import sweep_lock
    from sweeps.study import open_study

    spec = load_spec(write(lab_dir / "tiny.yaml", TINY.replace("seed: [0, 1]", "seed: [0]")))
    journal = lab_dir / "runs/tiny/journal.log"
    study = open_study(spec, str(journal), create=True)
    with sweep_lock(str(journal), "tiny"):
        queue_cells(study, spec, cells(spec))
    return spec, journal, study


@pytest.mark.parametrize("torn", [b'{"op_code": 5, "trial_id\n', b'{"op_code": 5, "tri'])
def test_torn_last_journal_record_is_set_aside_and_the_study_goes_on(lab_dir, capsys, torn):
    from sweeps.study import open_study

    spec, journal, study = _study_on_disk(lab_dir)
    good = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(torn)  # what a writer killed mid-write (or a full disk) leaves
    assert main(["sweep", "status", str(spec.path)]) == 0  # a reader does not touch the file
    assert "2 pending" in capsys.readouterr().out and journal.read_bytes() == good + torn
    changed = Path(spec.path).read_text()
    Path(spec.path).write_text(changed.replace("steps: 3", "steps: 5"))
    assert main(["sweep", "run", str(spec.path), "--no-report"]) == 2  # refused: nothing written, nothing repaired
    assert "different spec" in capsys.readouterr().err and journal.read_bytes() == good + torn
    Path(spec.path).write_text(changed)

    study = open_study(spec, str(journal), create=True)  # what `sweep run` does first: it reads, writes nothing
    study.set_user_attr("after", 1)  # the first write sets the torn record aside, then lands on a clean line
    err = capsys.readouterr().err
    assert "torn record" in err and "set it aside" in err, err
    (backup,) = journal.parent.glob("journal.log.torn-*")
    assert backup.read_bytes() == torn and journal.read_bytes().startswith(good)
    assert load(journal, "tiny").user_attrs["after"] == 1 and len(load(journal, "tiny").get_trials()) == 2


def test_a_live_writer_sets_aside_a_record_another_process_tore(lab_dir, capsys):
    spec, journal, study = _study_on_disk(lab_dir)  # this process keeps its storage open
    with open(journal, "ab") as f:
        f.write(b'{"op_code": 8, "worker_id": "dead", "trial_id": 0, "user_a')  # a worker killed mid-append
    study.set_user_attr("after", 2)
    assert "torn record" in capsys.readouterr().err
    assert load(journal, "tiny").user_attrs["after"] == 2


def test_garbage_inside_the_journal_is_refused_and_the_file_left_as_it_was(lab_dir, capsys):
    spec, journal, _ = _study_on_disk(lab_dir)
    lines = journal.read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:2] + [b"\x00\x00garbage\n"] + lines[2:])
    journal.write_bytes(damaged)
    for argv in (["sweep", "run", str(spec.path), "--no-report"], ["sweep", "status", str(spec.path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"line 3 of {len(lines) + 1} is not a journal record" in err, err
        assert journal.read_bytes() == damaged
    assert not list(journal.parent.glob("journal.log.torn-*"))


def test_refused_changed_spec_appends_nothing_to_the_storage(lab_dir, capsys):
    spec, journal, _ = _study_on_disk(lab_dir)
    before = journal.read_bytes()
    Path(spec.path).write_text(TINY.replace("seed: [0, 1]", "seed: [0]").replace("steps: 3", "steps: 5"))
    assert main(["sweep", "run", str(spec.path), "--no-report"]) == 2
    assert "different spec" in capsys.readouterr().err
    assert journal.read_bytes() == before


def test_a_diverging_cell_is_recorded_failed_with_the_reason_and_not_retried(lab_dir, monkeypatch):
    from lab import train as train_mod
    from sweeps.runner import run_sweep
    from sweeps.spec import load_spec

    original = train_mod.sequential_backward

    def nan_grads(model, *args, **kwargs):
        out = original(model, *args, **kwargs)
        for p in model.parameters():
            p.grad.fill_(float("nan"))
        return out

    monkeypatch.setattr(train_mod, "sequential_backward", nan_grads)
    spec = load_spec(write(lab_dir / "nan.yaml", TINY.replace("grid: {n: [1, 2], seed: [0, 1]}", "grid: {n: [1]}")
                           .replace("test_per_op: 3}", "test_per_op: 3, valid_per_op: 1}")))
    lines = []
    assert run_sweep(spec, runs_root=lab_dir / "runs", out=lines.append, quiet=True) == 1
    (trial,) = load(lab_dir / "runs/nan/journal.log", "nan").get_trials()
    assert trial.state.name == "FAIL" and trial.user_attrs["retryable"] is False
    assert "training diverged at step 1" in trial.user_attrs["failure"], trial.user_attrs["failure"]
    assert any("n=1 failed: TrainingDiverged: training diverged at step 1" in line for line in lines), lines


def test_exactly_once_with_concurrent_sweep_runs(lab_dir):
    """`sweep run --workers 2` and `sweep run --gpus 3,5` started at the same moment: 4 workers, 2 enqueuers, 4 cells."""
    spec = write(lab_dir / "race.yaml", TINY)
    procs = [subprocess.Popen(sweep_cmd("run", spec, "--no-report", *extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env()) for extra in (["--workers", 2], ["--gpus", "3,5"])]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
        assert "Traceback" not in out and "locked" not in out.lower(), out
    study = load(lab_dir / "runs/race/journal.log", "race")
    assert complete_per_cell(study) == {f"n={n},seed={s}": 1 for n in (1, 2) for s in (0, 1)}
    assert len(study.get_trials()) == 4  # nothing queued twice, no stray trial
    assert len({t.user_attrs["worker"] + str(t.user_attrs["pid"]) for t in study.trials}) >= 2
    # --gpus 3,5 (no --workers: one worker per id) pins worker i to CUDA_VISIBLE_DEVICES=gpus[i % 2]
    pinned = {t.user_attrs["worker"]: t.user_attrs["cuda_visible_devices"] for t in study.trials
              if t.user_attrs["cuda_visible_devices"] is not None}
    assert set(pinned.values()) <= {"3", "5"} and all(pinned[w] == "35"[int(w[1:]) % 2] for w in pinned)
    assert_clean_logs(lab_dir / "runs/race/logs")


STEPS = 200  # long enough that a kill right after the first checkpoint lands mid-run, even on an idle machine
SLOW = TINY.replace("steps: 3", f"steps: {STEPS}").replace(
    "train.eval_interval: 1000}", "train.eval_interval: 1000, train.checkpoint_interval: 5}")


def _wait_for_checkpoint(folder: Path, proc, timeout=120.0) -> None:
    t0 = time.time()
    while not (folder / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.01)


def _assert_resumed(folder: Path, rows_at_kill: list[str], step_at_kill: int) -> None:
    """The resumed run kept every log row up to the checkpoint verbatim (tokens/s included) and went on."""
    rows = folder.joinpath("metrics.jsonl").read_text().splitlines()
    steps = [json.loads(r)["step"] for r in rows]
    assert steps == list(range(1, STEPS + 1)), steps  # no step logged twice, none missing
    kept = [r for r in rows_at_kill if json.loads(r)["step"] <= step_at_kill]
    assert rows[:len(kept)] == kept  # wall-clock dependent fields identical: not retrained from step 0


def test_kill_9_then_next_sweep_run_resumes_the_cell(lab_dir):
    import torch

    spec = write(lab_dir / "kill.yaml", SLOW.replace("grid: {n: [1, 2], seed: [0, 1]}", "grid: {n: [2]}"))
    folder = lab_dir / "runs/kill/n=2"
    proc = subprocess.Popen(sweep_cmd("run", spec, "--no-report"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env())
    _wait_for_checkpoint(folder, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = torch.load(folder / "checkpoint.pt", weights_only=False)["step"]
    rows_at_kill = (folder / "metrics.jsonl").read_text().splitlines()
    assert 0 < step_at_kill < STEPS, step_at_kill

    run = subprocess.run(sweep_cmd("run", spec, "--no-report"), capture_output=True, text=True, env=env(), timeout=300)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"resumed from step {step_at_kill}" in run.stdout
    study = load(lab_dir / "runs/kill/journal.log", "kill")
    assert complete_per_cell(study) == {"n=2": 1}
    states = [(t.state.name, t.user_attrs.get("failure", "")) for t in study.trials]
    assert states[0][0] == "FAIL" and "stale: worker pid" in states[0][1] and states[1][0] == "COMPLETE", states
    done = study.trials[1]
    assert done.user_attrs["resumed_from_step"] == step_at_kill and done.user_attrs["step"] == STEPS
    _assert_resumed(folder, rows_at_kill, step_at_kill)


def test_kill_9_a_worker_another_worker_takes_over(lab_dir):
    import torch
    from optuna.trial import TrialState

    spec = write(lab_dir / "takeover.yaml", SLOW.replace("grid: {n: [1, 2], seed: [0, 1]}", "grid: {n: [1, 2]}"))
    proc = subprocess.Popen(sweep_cmd("run", spec, "--no-report", "--workers", 2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env())
    journal = lab_dir / "runs/takeover/journal.log"
    t0 = time.time()
    victim = None
    while victim is None:  # the first trial whose folder has a checkpoint
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()[0]
        time.sleep(0.01)
        if not journal.exists():
            continue
        try:
            study = load(journal, "takeover")
        except KeyError:
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            folder = lab_dir / "runs/takeover" / t.user_attrs["run_key"]
            if "pid" in t.user_attrs and (folder / "checkpoint.pt").exists():
                victim = t
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    folder = lab_dir / "runs/takeover" / victim.user_attrs["run_key"]
    step_at_kill = torch.load(folder / "checkpoint.pt", weights_only=False)["step"]
    rows_at_kill = (folder / "metrics.jsonl").read_text().splitlines()
    out = proc.communicate(timeout=300)[0]
    print(out)
    assert proc.returncode == 0, out
    study = load(journal, "takeover")
    assert complete_per_cell(study) == {"n=1": 1, "n=2": 1}
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [victim.number] and "stale" in failed[0].user_attrs["failure"]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].user_attrs["pid"] != victim.user_attrs["pid"]  # the surviving worker did it
    assert retry[0].user_attrs["resumed_from_step"] == step_at_kill > 0
    _assert_resumed(folder, rows_at_kill, step_at_kill)
    # The killed worker's log ends abruptly; the survivor's is clean.
    survivor = [p for p in (lab_dir / "runs/takeover/logs").glob("*.log") if "finished" in p.read_text()]
    assert survivor and all("Traceback" not in p.read_text() for p in survivor)
