"""Every system bench case runs end to end with tiny counts (`--quick`) and reports its figures
beside references, as a table and as JSON. Correctness only: no figure is compared with a speed.

The six cases start their own Mosquitto, edge, hub and reference servers on free ports; they
run at once, as separate `xiaozhi bench` processes, to keep the wall time short.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench.test_bench_charts import png_size

EXPECTED = {
    "connections": ("RSS per connection at", "connect rate to", "connections held"),
    "telemetry": ("msg/s through the edge", "CPU per message", "p99 latency at", "delivered at"),
    "audio": (
        "talking devices",
        "talking MQTT + UDP devices",
        "edge CPU per frame",
        "p99 lag",
        "p99 lag, 2 talking over MQTT + UDP",  # every step has its figure
    ),
    "voice": ("p50 round trip at", "p99 round trip at", "answered/s at"),
    "churn": ("RSS growth over", "file descriptor growth", "asyncio task growth", "cycles/s"),
    "stream": ("events/s pushed to", "dashboard first render", "longest main-thread task"),
    "overload": ("peak RSS at 3x capacity", "messages lost, counted by the edge"),
}
_TIMEOUT = 150


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, str]]]:
    """Each case's results folder and printed output."""
    xiaozhi = Path(sys.executable).with_name("xiaozhi")
    started = {}
    for case in EXPECTED:
        out = tmp_path_factory.mktemp(case)
        process = subprocess.Popen(
            [xiaozhi, "bench", case, "--quick", "--seconds", "0.5", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started[case] = (out, process)
    results = {}
    try:
        for case, (out, process) in started.items():
            output, _ = process.communicate(timeout=_TIMEOUT)
            assert process.returncode == 0, f"xiaozhi bench {case} --quick failed:\n{output}"
            results[case] = (out, output)
        yield results
    finally:
        for _, process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.integration
@pytest.mark.parametrize("case", list(EXPECTED))
def test_case_reports_its_figures_beside_references(
    runs: dict[str, tuple[Path, str]], case: str
) -> None:
    out, printed = runs[case]
    report = json.loads((out / f"{case}-latest.json").read_text())
    assert report["case"] == case
    assert report["machine"]["cpus"] >= 1
    assert report["notes"], "a system case says what its figures rest on"
    names = [figure["name"] for figure in report["figures"]]
    for prefix in EXPECTED[case]:
        assert any(name.startswith(prefix) for name in names), f"no figure {prefix!r}: {names}"
    for figure in report["figures"]:
        assert figure["value"] is not None, figure
        assert figure["reference"] is not None, figure
        assert figure["reference_name"], figure
        assert figure["unit"], figure
        assert figure["name"] in printed
    assert any(figure["target"] for figure in report["figures"]), "the issue's target is shown"
    stamped = [p for p in out.glob(f"{case}-*.json") if p.name != f"{case}-latest.json"]
    assert len(stamped) == 1
    assert png_size(stamped[0].with_suffix(".png"))[0] > 0  # drawn beside its JSON
    assert png_size(out / f"{case}-latest.png")[0] > 0
    header = [line for line in printed.splitlines() if line.startswith("figure ")]
    assert header, printed
    assert "reference" in header[0]
