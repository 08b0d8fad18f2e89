"""Reports CI can gate on: a run of ``xiaozhi sim fleet`` or ``scenario`` as JSON and JUnit XML.

A run ends as a list of :class:`Case`: one per scenario step, one per fleet check
(``connected``, ``p99 command latency``...). The same cases go to both files, so the JSON a
script reads and the test list a CI page shows never disagree:

- JSON (``--report-json PATH``): ``{"kind", "name", "passed", "exit_code", "started_at",
  "seconds", "cases": [...], ...}`` plus what the command adds (the fleet's counters and
  thresholds, the scenario's file).
- JUnit XML (``--junit PATH``): ``<testsuites>`` holding one ``<testsuite>``, one
  ``<testcase>`` per case, with ``<failure message=...>``, ``<skipped message=...>`` or
  ``<error message=...>`` as Jenkins' JUnit plugin and GitLab's test reports read them (the
  attributes both use: ``tests``, ``failures``, ``errors``, ``skipped``, ``time``,
  ``timestamp``; ``classname`` and ``name`` on each case). Written with the standard
  library's ``xml.etree``, which escapes whatever a device sent back.

A case's ``message`` is the one line a CI reader sees first, so it carries the figure and the
limit ("connected 6 of 8 expected devices, below --min-connected 100% (8)").
"""

from __future__ import annotations

import json
import re
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Case", "CaseStatus", "RunReport", "junit_xml", "write_reports"]

CaseStatus = Literal["PASS", "FAIL", "SKIP", "ERROR"]
"""PASS/FAIL: the case ran and held or not; SKIP: not run; ERROR: the run could not start."""


@dataclass(frozen=True, slots=True)
class Case:
    """One line of the verdict: a scenario step or a fleet check.

    Attributes:
        name: what was checked, as a CI page lists it (steps keep their number first, so
            they sort in run order).
        status: see :data:`CaseStatus`.
        seconds: how long it took.
        message: FAIL/SKIP/ERROR: one line saying why, with the figure and the limit.
        detail: more text for the failure's body (what was seen); may be empty.
    """

    name: str
    status: CaseStatus
    seconds: float = 0.0
    message: str = ""
    detail: str = ""


@dataclass(slots=True)
class RunReport:
    """What one command run found.

    Attributes:
        kind: ``fleet`` or ``scenario`` (the suite's class name prefix).
        name: the scenario's name, or a description of the fleet.
        started_at: ISO 8601 UTC start time.
        seconds: the whole run.
        exit_code: what the command exits with (0 passed, 1 a case failed, 2 could not run).
        cases: in run order.
        data: JSON-ready extras of the command (counters, thresholds, the scenario file).
    """

    kind: Literal["fleet", "scenario"]
    name: str
    started_at: str
    seconds: float
    exit_code: int
    cases: list[Case] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def count(self, status: CaseStatus) -> int:
        return sum(1 for case in self.cases if case.status == status)

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON report (see the module docstring)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "counts": {
                "passed": self.count("PASS"),
                "failed": self.count("FAIL"),
                "skipped": self.count("SKIP"),
                "errors": self.count("ERROR"),
            },
            "cases": [
                {
                    "name": case.name,
                    "status": case.status,
                    "seconds": round(case.seconds, 3),
                    "message": case.message,
                    "detail": case.detail,
                }
                for case in self.cases
            ],
            **self.data,
        }


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
"""Characters XML 1.0 cannot hold, even escaped; a device's garbage may carry them."""


def _xml_text(text: str) -> str:
    return _NOT_XML.sub(lambda m: ascii(m.group())[1:-1], text)  # "\x00", "\ufffe"


def _classname(report: RunReport) -> str:
    """``xiaozhi.sim.<kind>.<name as an identifier>``: CI pages group cases by it."""
    slug = re.sub(r"[^a-z0-9]+", "_", report.name.lower()).strip("_") or report.kind
    return f"xiaozhi.sim.{report.kind}.{slug[:60]}"


def junit_xml(report: RunReport) -> bytes:
    """The JUnit XML document (UTF-8, with its declaration)."""
    seconds = f"{report.seconds:.3f}"
    counts = {
        "tests": str(len(report.cases)),
        "failures": str(report.count("FAIL")),
        "errors": str(report.count("ERROR")),
        "skipped": str(report.count("SKIP")),
        "time": seconds,
    }
    root = ET.Element("testsuites", {"name": f"xiaozhi sim {report.kind}", **counts})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": _xml_text(report.name),
            **counts,
            "timestamp": report.started_at.removesuffix("+00:00"),
            "hostname": socket.gethostname(),
        },
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in report.data.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            ET.SubElement(properties, "property", {"name": key, "value": str(value)})
    classname = _classname(report)
    for case in report.cases:
        element = ET.SubElement(
            suite,
            "testcase",
            {"classname": classname, "name": _xml_text(case.name), "time": f"{case.seconds:.3f}"},
        )
        tag = {"FAIL": "failure", "SKIP": "skipped", "ERROR": "error"}.get(case.status)
        if tag is not None:
            outcome = ET.SubElement(element, tag, {"message": _xml_text(case.message)})
            if tag != "skipped":
                outcome.set("type", f"{report.kind}.{tag}")
                outcome.text = _xml_text("\n".join(t for t in (case.message, case.detail) if t))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_reports(
    report: RunReport, *, json_path: Path | None, junit_path: Path | None
) -> list[Path]:
    """Write the files asked for (creating their folders); return their paths.

    Raises:
        OSError: a file cannot be written (the caller says so and fails the run: a CI job
            whose report is missing must not pass).
    """
    written: list[Path] = []
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
        written.append(json_path)
    if junit_path is not None:
        junit_path.parent.mkdir(parents=True, exist_ok=True)
        junit_path.write_bytes(junit_xml(report))
        written.append(junit_path)
    return written
