"""Benchmark runner: every `xiaozhi bench CASE` prints a table and writes JSON and a chart.

Each figure is measured beside a reference measured the same way in the same run (design.md
section 8), so a reader sees what our code costs over the primitive it is built on. Results
go to `<results>/<case>-<UTC time>.json` and `.png` (the figures drawn, ours beside the
reference: `charts.py`), and the same as `<case>-latest.json` / `.png`, with the machine and
the versions that produced them. `<results>` is outside the source tree unless `--out` says
otherwise: see :func:`default_results_dir`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

__all__ = [
    "CASES",
    "Figure",
    "Report",
    "default_results_dir",
    "format_number",
    "measure_rate",
    "run_bench",
    "write_report",
]
_VERSIONED = ("websockets", "aiomqtt", "msgpack", "orjson", "pydantic", "opuslib", "hassil")


@dataclass(slots=True)
class Figure:
    """One measured figure beside its reference (`reference` None where there is none)."""

    name: str
    value: float
    unit: str
    reference: float | None = None
    reference_name: str = ""
    notes: str = ""
    target: str = ""  # the goal for this figure, as text ("<= 25 KiB"); "" if none

    @property
    def ratio(self) -> float | None:
        """value / reference: for rates, the share of the primitive's speed we keep."""
        if not self.reference:
            return None
        return self.value / self.reference


@dataclass(slots=True)
class Report:
    case: str
    figures: list[Figure] = field(default_factory=list)
    started_at: str = ""
    machine: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # counts and conditions behind the figures

    def table(self) -> str:
        """The figures as an aligned text table, then the notes (one per line)."""
        with_target = any(f.target for f in self.figures)
        rows = [("figure", "value", "unit", "reference", "ratio", "target")]
        for f in self.figures:
            ref = (
                "" if f.reference is None else f"{format_number(f.reference)} ({f.reference_name})"
            )
            ratio = "" if f.ratio is None else f"{f.ratio:.2f}"
            rows.append((f.name, format_number(f.value), f.unit, ref, ratio, f.target))
        columns = 6 if with_target else 5
        widths = [max(len(r[i]) for r in rows) for i in range(columns)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r[:columns], widths, strict=True)).rstrip()
            for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def format_number(value: float) -> str:
    """Thousands separators for large figures, significant decimals for small ones."""
    if not math.isfinite(value):
        return "n/a"
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: a figure that could not be measured is written as null."""
    return value if value is None or math.isfinite(value) else None


def default_results_dir(environ: Mapping[str, str]) -> Path:
    """Where results go without `--out`: never the source tree, which may be read-only.

    `$XIAOZHI_STATE_DIR/bench` when `XIAOZHI_STATE_DIR` is set (the state folder `xiaozhi up`
    and the hub use, so one setting moves everything); else `$XDG_STATE_HOME/xiaozhi/bench`,
    `XDG_STATE_HOME` defaulting to `~/.local/state` as the XDG base directory spec says.
    (`xiaozhi up`'s own default, `var` in the current folder, is not taken: run from a
    checkout, that is the source tree.)
    """
    if state := environ.get("XIAOZHI_STATE_DIR"):
        return Path(state).expanduser() / "bench"
    xdg = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg).expanduser() / "xiaozhi" / "bench"


def machine_info() -> dict[str, object]:
    """The machine and versions a result was measured with."""
    versions: dict[str, str] = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover
            versions[name] = "absent"
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "versions": versions,
    }


def measure_rate(operation: Callable[[], object], seconds: float, batch: int = 200) -> float:
    """Operations per second of `operation`, run in batches for about `seconds`."""
    operation()  # warm caches and lazy imports outside the timed part
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            operation()
        done += batch
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def write_report(report: Report, out_dir: Path) -> Path:
    """Write the report as JSON and its chart as PNG, each timestamped and as `-latest`.

    Returns the timestamped JSON's path; the PNG has the same name with `.png`, and is left
    out, with a line saying how to get it, where matplotlib is not installed (the `bench`
    extra).
    """

    out_dir.mkdir(parents=True, exist_ok=True)
    data = asdict(report)
    for fig, raw in zip(report.figures, data["figures"], strict=True):
        raw["ratio"] = _finite(fig.ratio)
        raw["value"], raw["reference"] = _finite(fig.value), _finite(fig.reference)
    stamp = report.started_at.replace(":", "").replace("-", "")
    path = out_dir / f"{report.case}-{stamp}.json"
    text = json.dumps(data, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
    (out_dir / f"{report.case}-latest.json").write_text(text, encoding="utf-8")
    from xiaozhi_bench.charts import ChartsUnavailable, draw_report  # after measuring

    try:
        chart = draw_report(report, path.with_suffix(".png"))
    except ChartsUnavailable as err:
        print(f"not drawn {err}")
    else:
        shutil.copyfile(chart, out_dir / f"{report.case}-latest.png")
        print(f"drawn     {chart}")
    return path


def _codecs(seconds: float, quick: bool) -> Report:
    from xiaozhi_bench.codecs import run_codecs

    return run_codecs(seconds)


def _connections(seconds: float, quick: bool) -> Report:
    from xiaozhi_bench.connections import run_connections

    return run_connections(seconds, quick=quick)


def _telemetry(seconds: float, quick: bool) -> Report:
    from xiaozhi_bench.telemetry import run_telemetry

    return run_telemetry(seconds, quick=quick)


def _audio(seconds: float, quick: bool) -> Report:
    from xiaozhi_bench.audio import run_audio

    return run_audio(seconds, quick=quick)


def _voice(seconds: float, quick: bool) -> Report:
    from xiaozhi_bench.voice import run_voice

    return run_voice(seconds, quick=quick)


def _churn(seconds: float, quick: bool) -> Report:
    from xiaozhi_bench.churn import run_churn

    return run_churn(seconds, quick=quick)


def _speech(seconds: float, quick: bool) -> Report:
    from xiaozhi_bench.speech import run_speech

    return run_speech(seconds, quick=quick)


def _chaos(seconds: float, quick: bool) -> Report:
    from xiaozhi_bench.chaos import run_chaos

    return run_chaos(seconds, quick=quick)


def _stream(seconds: float, quick: bool) -> Report:
    from xiaozhi_bench.stream import run_stream

    return run_stream(seconds, quick=quick)


def _overload(seconds: float, quick: bool) -> Report:
    from xiaozhi_bench.overload import run_overload

    return run_overload(seconds, quick=quick)


CASES: dict[str, tuple[Callable[[float, bool], Report], float]] = {
    # name: (function taking the seconds per figure or phase and the quick flag, default
    # seconds). `--quick` runs a system case with tiny counts, to check it works (tests).
    "codecs": (_codecs, 0.5),
    "connections": (_connections, 1.0),  # seconds each level is held with heartbeats
    "telemetry": (_telemetry, 4.0),  # seconds per run (nine runs: module docstring)
    "audio": (_audio, 4.0),  # seconds per step of talking devices
    "voice": (_voice, 5.0),  # seconds per command rate
    "churn": (_churn, 0.0),  # counts, not seconds: the argument is unused
    "speech": (_speech, 0.0),  # counts, not seconds: the argument is unused
    "chaos": (_chaos, 3.0),  # seconds of traffic per phase (half before the fault)
    "stream": (_stream, 0.0),  # counts, not seconds: the argument is unused
    "overload": (_overload, 20.0),  # seconds at 3x the edge's capacity, edge then bare bridge
}


def run_bench(case: str, *, seconds: float | None, out_dir: str | Path, quick: bool = False) -> int:
    """Run one case, print its table, write its JSON; return the process exit code."""
    function, default_seconds = CASES[case]
    started = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    report = function(default_seconds if seconds is None else seconds, quick)
    report.started_at = started
    report.machine = machine_info()
    print(
        f"xiaozhi bench {case}  ({report.machine['cpus']} cpus, python {report.machine['python']})"
    )
    print(report.table())
    path = write_report(report, Path(out_dir))
    print(f"written   {path}")
    return 0
