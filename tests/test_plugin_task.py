"""A task defined outside the package is listed, trains and evaluates, through both plugin paths."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY_TASK = ROOT / "docs" / "examples" / "copy_task.py"
TINY = ["--size", "custom", "--set", "model.d_model=32", "--set", "model.layers=3", "--set", "model.n_heads=2",
        "--steps", "3", "--batch-tokens", "128", "--context", "32", "--no-progress",
        "--set", "task.train_examples=200", "--set", "task.test_per_length=2"]


def _mtplab(args, env_extra, tmp_path):
    env = {**os.environ, "MTPLAB_CACHE_DIR": str(tmp_path / "cache"), **env_extra}
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, env=env, cwd=tmp_path)


def test_task_from_a_file_via_MTPLAB_TASKS(tmp_path):
    env = {"MTPLAB_TASKS": str(COPY_TASK)}
    listed = _mtplab(["tasks"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("copy ") for line in listed.stdout.splitlines())
    trained = _mtplab(["train", "--task", "copy", "--n", "2", "--out", "run", *TINY], env, tmp_path)
    assert trained.returncode == 0, trained.stderr
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert {"accuracy/length=2", "accuracy/length=12", "accuracy/in_domain", "accuracy/ood"} <= set(ev["metrics"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["task"]["name"] == "copy"
    # without the plugin the run's task is unknown: one line, exit 2
    missing = _mtplab(["eval", "run"], {"MTPLAB_TASKS": ""}, tmp_path)
    assert missing.returncode == 2 and "unknown task 'copy'" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_task_from_an_installed_entry_point(tmp_path):
    """A real distribution on sys.path whose entry point names the task class."""
    site = tmp_path / "site"
    (site / "copy_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "copy_plugin.py").write_text(COPY_TASK.read_text())
    (site / "copy_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: copy-plugin\nVersion: 0.1\n")
    (site / "copy_plugin-0.1.dist-info" / "entry_points.txt").write_text("[mtplab.tasks]\ncopy = copy_plugin:CopyTask\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "MTPLAB_TASKS": ""}
    listed = _mtplab(["tasks"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("copy ") for line in listed.stdout.splitlines())
    trained = _mtplab(["train", "--task", "copy", "--out", "run", *TINY], env, tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert "accuracy/in_domain" in json.loads((tmp_path / "run" / "eval.json").read_text())["metrics"]


def _copy_plugin_site(tmp_path) -> Path:
    site = tmp_path / "site"
    (site / "copy_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "copy_plugin.py").write_text(COPY_TASK.read_text())
    (site / "copy_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: copy-plugin\nVersion: 0.1\n")
    (site / "copy_plugin-0.1.dist-info" / "entry_points.txt").write_text("[mtplab.tasks]\ncopy = copy_plugin:CopyTask\n")
    return site


def test_a_task_name_defined_twice_is_refused_naming_both(tmp_path):
    env = {"PYTHONPATH": os.pathsep.join([str(_copy_plugin_site(tmp_path)), str(ROOT)]), "MTPLAB_TASKS": str(COPY_TASK)}
    for args in (["tasks"], ["generate", "copy", "--limit", "1"]):
        r = _mtplab(args, env, tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "task 'copy' is defined twice" in r.stderr and "entry point 'copy = copy_plugin:CopyTask'" in r.stderr
        assert f"MTPLAB_TASKS entry '{COPY_TASK}'" in r.stderr, r.stderr


def test_a_plugin_named_like_a_built_in_task_is_refused(tmp_path):
    shadow = tmp_path / "shadow.py"
    shadow.write_text(COPY_TASK.read_text().replace('name = "copy"', 'name = "polyarith"'))
    for args in (["tasks"], ["generate", "polyarith", "--limit", "1"]):
        r = _mtplab(args, {"MTPLAB_TASKS": str(shadow)}, tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "task name 'polyarith'" in r.stderr and "built-in task (generators.polyarith)" in r.stderr, r.stderr
