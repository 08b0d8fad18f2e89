"""Secrets kept in the state directory: created once, never readable by others."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from xiaozhi_runtime.secrets_file import read_or_create_secret


def test_a_new_secret_file_is_private_from_its_creation(tmp_path: Path) -> None:
    path = tmp_path / "state" / "api_key"
    secret = read_or_create_secret(path, nbytes=24)
    assert len(secret) == 32  # 24 bytes, URL-safe base64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_or_create_secret(path) == secret  # read back, not replaced


def test_processes_starting_at_once_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    with ThreadPoolExecutor(8) as pool:
        values = set(pool.map(lambda _: read_or_create_secret(path), range(32)))
    assert len(values) == 1
