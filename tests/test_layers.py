"""The floor plan's import rules hold, and `make lint` (lint-imports) fails on a wrong-way import."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PROJECT = ("bridge", "orchestrator", "testkit", "tests", "bench")
# Modules at the very bottom, or sans-I/O: they import nothing of the project's at all.
SELF_CONTAINED = ("bridge/audiosocket/protocol.py", "orchestrator/audio.py", "orchestrator/text.py")


def _run_lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    for name in PROJECT:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_tree_as_it_is_passes() -> None:
    result = _run_lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("orchestrator/clock.py", "import bridge.pacer", "orchestrator/ never imports bridge/"),
        ("bridge/gateway.py", "import testkit.fakes", "the product never imports test or demo"),
        ("orchestrator/playback.py", "import tests.conftest", "the product never imports test or demo"),
        ("bridge/audiosocket/protocol.py", "import orchestrator.domain.errors", "the AudioSocket codec"),
        ("bridge/audiosocket/protocol.py", "import bridge.asterisk_names", "the AudioSocket codec"),
        ("orchestrator/text.py", "import orchestrator.audio", "the AudioSocket codec"),
        ("orchestrator/audio.py", "import orchestrator.domain.errors", "the AudioSocket codec"),
        ("orchestrator/dialogue_map/lint.py", "import orchestrator.intents.ngram", "dialogue maps sit below"),
    ],
)
def test_a_wrong_way_import_fails_lint(tree_copy: Path, module: str, bad_import: str, contract: str) -> None:
    path = tree_copy / module
    path.write_text(path.read_text() + f"\n{bad_import}  # wrong way, on purpose\n")
    result = _run_lint(tree_copy)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout.replace("\n", " ")
    assert "BROKEN" in result.stdout


@pytest.mark.parametrize("module", SELF_CONTAINED)
def test_bottom_modules_import_nothing_of_ours(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    ours = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            ours += [a.name for a in node.names if a.name.split(".")[0] in PROJECT]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            ours += [node.module] if node.module.split(".")[0] in PROJECT else []
    assert ours == [], f"{module} imports {ours}"
