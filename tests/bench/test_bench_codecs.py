"""`xiaozhi bench codecs` prints a table and writes a complete JSON report (not a speed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.test_bench_charts import png_size

EXPECTED_FORMATS = ("binary v1", "binary v2", "binary v3", "audio monitor", "stream v3",
                    "json", "serial", "wav")  # fmt: skip


def test_bench_codecs_reports_every_format_beside_a_reference(tmp_path: Path) -> None:
    xiaozhi = Path(sys.executable).with_name("xiaozhi")
    result = subprocess.run(
        [xiaozhi, "bench", "codecs", "--seconds", "0.001", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "ops/s" in result.stdout
    report = json.loads((tmp_path / "codecs-latest.json").read_text())
    names = [figure["name"] for figure in report["figures"]]
    for fmt in EXPECTED_FORMATS:
        assert any(name.startswith(fmt) for name in names), f"no figure for {fmt}"
    for figure in report["figures"]:
        assert figure["value"] > 0
        assert figure["reference"] > 0
        assert figure["ratio"] == figure["value"] / figure["reference"]
        assert figure["name"] in result.stdout
    assert report["machine"]["cpus"] >= 1
    assert report["machine"]["versions"]["msgpack"]
    stamped = [p for p in tmp_path.glob("codecs-*.json") if p.name != "codecs-latest.json"]
    assert len(stamped) == 1
    assert png_size(stamped[0].with_suffix(".png")) == png_size(tmp_path / "codecs-latest.png")
