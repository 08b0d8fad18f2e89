"""Benchmark results are drawn (a PNG per case beside its JSON, ours beside the reference) and
written outside the source tree unless `--out` says otherwise (issue 17, point 11).

The PNG is checked as a file a viewer opens: its signature, its size from the IHDR chunk, and
that a report with more figures draws a taller picture (one panel per figure).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from xiaozhi_bench.charts import draw_report
from xiaozhi_bench.runner import Figure, Report, default_results_dir, write_report

XIAOZHI = Path(sys.executable).with_name("xiaozhi")
SOURCE_TREE = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, read from its header; fails on anything else."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def report(figures: int) -> Report:
    return Report(
        "demo",
        [
            Figure(f"figure {n}", 10.0 * (n + 1), "ops/s", 20.0 * (n + 1), "primitive")
            for n in range(figures)
        ],
        started_at="2026-12-07T18:00:00+00:00",
    )


def test_each_case_gets_a_png_beside_its_json(tmp_path: Path) -> None:
    stamped = write_report(report(4), tmp_path)
    assert stamped.name == "demo-20261207T180000+0000.json"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "demo-20261207T180000+0000.json",
        "demo-20261207T180000+0000.png",
        "demo-latest.json",
        "demo-latest.png",
    ]
    assert (tmp_path / "demo-latest.png").read_bytes() == stamped.with_suffix(".png").read_bytes()
    width, height = png_size(stamped.with_suffix(".png"))
    assert width >= 800
    assert height >= 200


def test_one_panel_per_figure_and_unmeasured_figures_still_draw(tmp_path: Path) -> None:
    few = png_size(draw_report(report(3), tmp_path / "few.png"))
    many = png_size(draw_report(report(9), tmp_path / "many.png"))
    assert many[1] > few[1]  # three panels a row: three rows instead of one
    odd = report(2)
    odd.figures += [
        Figure("lost", float("nan"), "ms", 5.0, "bare"),
        Figure("alone", 3.0, "KiB", target="<= 25 KiB"),
    ]
    assert png_size(draw_report(odd, tmp_path / "odd.png"))[0] > 0


def test_results_go_to_the_state_dir_never_the_source_tree(tmp_path: Path) -> None:
    home = Path.home()
    assert default_results_dir({}) == home / ".local" / "state" / "xiaozhi" / "bench"
    xdg = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    assert default_results_dir(xdg) == tmp_path / "xdg" / "xiaozhi" / "bench"
    state = {**xdg, "XIAOZHI_STATE_DIR": str(tmp_path / "state")}
    assert default_results_dir(state) == tmp_path / "state" / "bench"
    assert not default_results_dir({}).is_relative_to(SOURCE_TREE)


def test_bench_without_out_writes_under_xiaozhi_state_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAOZHI_")}
    env["XIAOZHI_STATE_DIR"] = str(tmp_path / "state")
    done = subprocess.run(
        [XIAOZHI, "bench", "codecs", "--seconds", "0.001"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "state" / "bench"
    assert f"written   {out}/codecs-" in done.stdout
    assert f"drawn     {out}/codecs-" in done.stdout
    assert png_size(out / "codecs-latest.png")[0] > 0
    assert (out / "codecs-latest.json").is_file()


def test_without_matplotlib_the_json_is_written_and_the_missing_chart_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """matplotlib is the `bench` extra: an install without it still benchmarks."""
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import fails
    stamped = write_report(report(2), tmp_path)
    assert stamped.is_file()
    assert not list(tmp_path.glob("*.png"))
    said = capsys.readouterr().out
    assert said.startswith("not drawn demo-20261207T180000+0000.png: matplotlib is not installed")
    assert "pip install 'xiaozhi-hub[bench]'" in said
