"""`make demo` installs only what running img2img needs; `make test` adds the test tools (issue 21.7).

`make -n -B` prints every command a fresh clone would run, without running them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def planned(*args: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.fail("make is needed to build this project (README: Two commands)")
    result = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), *args], capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if not line.startswith("make")]


def pip_installs(lines: list[str]) -> list[str]:
    return [line.split("pip install", 1)[1].strip() for line in lines if "pip install" in line]


def test_demo_installs_the_runtime_only() -> None:
    lines = planned("demo")
    assert pip_installs(lines) == ["--quiet -e ."]
    assert any("img2img upscale assets/sample.png demo_out/" in line for line in lines)


def test_test_adds_the_dev_tools_and_runs_the_suite_from_a_fresh_clone() -> None:
    lines = planned("test")
    assert pip_installs(lines) == ["--quiet -e .", '--quiet -e ".[dev]"']
    assert lines[0].startswith("test -x .venv/bin/python || ")  # creates the venv itself
    assert lines[-2:] == [".venv/bin/lint-imports", ".venv/bin/python -m pytest"]


def test_torch_index_installs_the_cpu_wheels_first() -> None:
    cpu = "https://download.pytorch.org/whl/cpu"
    installs = pip_installs(planned("demo", f"TORCH_INDEX={cpu}"))
    assert installs == [f"--quiet torch torchvision --index-url {cpu}", "--quiet -e ."]
