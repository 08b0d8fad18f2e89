"""A secret kept in a file of the state directory: created once, mode 0600 from the start.

The hub's token secret and ``xiaozhi up``'s API key are generated on first run and read on
every later one. The file is written with mode 0600 from its creation (never readable by
others, not even between a write and a chmod) and linked into place whole, so two processes
starting at once agree on one value and neither reads a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["read_or_create_secret", "write_private_file"]


def read_or_create_secret(path: Path, *, nbytes: int = 32) -> str:
    """The secret in ``path``; a new random one (URL-safe text of ``nbytes`` bytes) written
    there first when the file does not exist. May return "" for an existing empty file.

    Raises:
        OSError: the file cannot be created or read.
        UnicodeDecodeError: the file is not ASCII text.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole to a private temporary file, then linked into place: the link fails
        # if another process was first, and a reader never sees a half-written file.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(secrets.token_urlsafe(nbytes) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return path.read_text(encoding="ascii").strip()


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600 from the start, whole or not at all.

    For state files that hold what an operator decided (approved devices, renames): written
    to a private temporary file of the same folder, then renamed over the old one, so a
    crash or a reader in another process never sees half a file.

    Raises:
        OSError: the folder cannot be created or written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
