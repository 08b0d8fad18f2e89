"""An edge's log line stays a bounded MQTT payload whatever the event carries (edge/logfeed.py)."""

from __future__ import annotations

import json
from pathlib import Path

from xiaozhi_edge.logfeed import MAX_LOG_BYTES, _bounded


def test_a_small_line_is_kept_whole_and_any_value_becomes_json() -> None:
    record = {"level": "warning", "event": "x", "edge_id": "e1", "path": Path("/tmp/a")}
    assert json.loads(_bounded(record)) == {**record, "path": "/tmp/a"}


def test_a_huge_line_is_cut_to_the_bound_keeping_what_names_it() -> None:
    many = {f"field_{i}": "y" * 2000 for i in range(50)}
    record = {"level": "error", "event": "boom", "timestamp": "t", "edge_id": "e1", **many}
    cut = json.loads(payload := _bounded(record))
    assert len(payload) <= MAX_LOG_BYTES
    assert (cut["level"], cut["event"], cut["edge_id"], cut["truncated"]) == (
        "error", "boom", "e1", True,
    )  # fmt: skip
    assert cut["field_0"].startswith("y" * 500)  # the first fields kept, cut short


def test_an_event_name_too_long_to_fit_is_cut_too() -> None:
    record = {"level": "error", "event": "z" * 10_000, "timestamp": "t", "edge_id": "e1"}
    payload = _bounded(record)
    assert len(payload) <= MAX_LOG_BYTES
    assert json.loads(payload)["event"] == "z" * 512
