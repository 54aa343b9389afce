"""The config code is handed the task class: lab.config never imports the task registry (no import circle)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Build a config for a task the registry does not know and read it back, then list the generators modules loaded.
PROBE = """
import sys
from dataclasses import dataclass
from lab.config import RunConfig, build_run_config

class Fake:  # what a registry entry offers the config code: name, Config, default_context
    name, default_context = "fake", 64

    @dataclass(frozen=True)
    class Config:
        length: int = 3

cfg = build_run_config(Fake, {"task.length": "5", "model.n": "2"})
assert (cfg.task_name, cfg.task.length, cfg.train.context, cfg.model.n) == ("fake", 5, 64, 2), cfg
assert RunConfig.from_dict(cfg.to_dict(), {"fake": Fake}.__getitem__) == cfg
print(sorted(m for m in sys.modules if m == "generators" or m.startswith("generators.")))
"""


def test_building_and_reading_a_config_loads_no_generators_module():
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"lab.config loaded {r.stdout.strip()}"


def test_no_import_of_generators_in_the_config_modules():
    for path in (ROOT / "lab" / "config.py", ROOT / "lab" / "fields.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] == "generators"], f"{path.name}:{node.lineno} imports {names}"
