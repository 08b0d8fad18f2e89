"""`xiaozhi bench speech --quick` runs end to end (synthesized speech through a real Mosquitto,
edge, hub and simulated devices; the recogniser alone; the edge's frame cost) and reports every
figure beside its reference and the issue's targets with hit or miss. Correctness of the
report only: no figure's value is checked (they are measurements, not assertions).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIGURES = (
    "right, clean",
    "right, 25 dB SNR",
    "right, 15 dB SNR",
    "out-of-domain executed, clean",
    "out-of-domain executed, 25 dB SNR",
    "out-of-domain executed, 15 dB SNR",
    "end of speech -> action p50",
    "end of speech -> action p95",
    "hub processing_time_ms p50",
    "hub processing_time_ms p95",
    "recogniser CPU per audio second",
    "real-time factor,",
    "talking devices one core transcribes in real time",
    "edge VAD + Opus decode per 60 ms frame",
    "edge manual-mode decode per 60 ms frame",
)
TARGETED = (
    "right, clean",
    "right, 15 dB SNR",
    "out-of-domain executed, clean",
    "end of speech -> action p50",
    "end of speech -> action p95",
)


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_speech_case_reports_every_figure(tmp_path: Path) -> None:
    xiaozhi = Path(sys.executable).with_name("xiaozhi")
    done = subprocess.run(
        [xiaozhi, "bench", "speech", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "speech-latest.json").read_text())
    assert report["case"] == "speech"
    figures = {figure["name"]: figure for figure in report["figures"]}
    for prefix in FIGURES:
        named = [name for name in figures if name.startswith(prefix)]
        assert len(named) == 1, f"no figure {prefix!r}: {list(figures)}"
        figure = figures[named[0]]
        assert {"value", "unit", "reference", "reference_name", "ratio", "target"} <= set(figure)
        assert figure["unit"], figure
        assert figure["reference_name"], figure
        assert figure["name"] in done.stdout
    for name in TARGETED:
        verdict = figures[name]["target"]
        assert verdict.endswith((": hit", ": MISS", ": not measured")), figures[name]
    notes = "\n".join(report["notes"])
    for said in ("load average at start", "recogniser alone", "system:", "load average at end"):
        assert said in notes, notes
