"""`xiaozhi --version`: what a user pastes into a bug report."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

XIAOZHI = shutil.which("xiaozhi") or str(Path(sys.executable).with_name("xiaozhi"))


def test_version_is_the_packages() -> None:
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    result = subprocess.run(
        [XIAOZHI, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"xiaozhi {project['version']}"
