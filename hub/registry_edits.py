"""The operator's registry edits on disk, so renames, areas, groups and removals survive a
restart (zigbee2mqtt writes the same into its configuration).

One JSON file in the state directory (``registry.json``), rewritten whole after each bridge
request that edited the registry and applied over the home file when the hub starts
(:meth:`~xiaozhi_hub.registry.Registry.apply_edits`). Replicas sharing the state directory
share it; the last writer wins, which is what an operator editing through one replica
expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from xiaozhi_hub.registry import Registry
from xiaozhi_runtime.secrets_file import write_private_file

__all__ = ["REGISTRY_EDITS_FILE_NAME", "load_registry_edits", "save_registry_edits"]

log = structlog.get_logger("xiaozhi.hub")

REGISTRY_EDITS_FILE_NAME = "registry.json"
_FILE_VERSION = 1


def load_registry_edits(registry: Registry, path: Path) -> None:
    """Apply the edits saved in ``path``; nothing when there is no file yet.

    An unreadable file is logged and left alone (the hub starts from the home file and the
    next edit rewrites it): refusing to start over it would lock the operator out.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as err:
        log.error("registry_edits_unreadable", path=str(path), error=str(err))
        return
    if not isinstance(document, dict) or document.get("version") != _FILE_VERSION:
        log.error("registry_edits_unreadable", path=str(path), error="not a version 1 file")
        return
    for problem in registry.apply_edits(document):
        log.warning("registry_edit_not_applied", path=str(path), problem=problem)


def save_registry_edits(registry: Registry, path: Path) -> None:
    """Write the registry's edits to ``path``; a failure is logged, the edit stays in memory
    (the bridge request already succeeded: the operator sees it until the next restart)."""
    document = {"version": _FILE_VERSION, **registry.edits()}
    try:
        write_private_file(path, json.dumps(document, indent=1, ensure_ascii=False))
    except OSError as err:
        log.error("registry_edits_not_saved", path=str(path), error=str(err))
