"""``python -m bench.pipeline`` run as a user runs it, small, on the test session's broker (through
``KAFKA_BOOTSTRAP_SERVERS``, as the benchmark takes an external broker): every phase runs, the
worker's signals match the offline fold, and each latency phase measures with the readers it
names and no others."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
RATE, SECONDS = 200, 1  # so each phase measures RATE * SECONDS followups


def test_the_pipeline_benchmark_runs_every_phase_and_both_latency_phases(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    output = tmp_path / "bench-pipeline.txt"
    options = f"--events 3000 --rate {RATE} --seconds {SECONDS} --warmup 0.5 --conversations 20"
    done = subprocess.run(
        [sys.executable, "-m", "bench.pipeline", *options.split(), "--output", str(output)],
        cwd=ROOT,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert output.read_text().splitlines() == out.splitlines()  # the saved copy is the report

    assert re.search(r"^\(b\) pipeline: worker start -> all folded .* 3,000 ", out, re.M), out
    signals = re.search(r"^signals on \S+ .*: ([\d,]+); the offline fold .* \(match\)$", out, re.M)
    assert signals is not None and int(signals[1].replace(",", "")) > 0, out

    # the latency table: phase number, what was measured, how many of the measured arrived
    rows = re.findall(r"^([12])\. (publish -> [^\d]+?)\s+([\d,]+)/([\d,]+)\s", out, re.M)
    measured = f"{RATE * SECONDS:,}"
    assert [(phase, what) for phase, what, _, _ in rows] == [
        ("1", "publish -> broker ack (Publisher)"),
        ("1", "publish -> signal, read_committed"),
        ("2", "publish -> broker ack (Publisher)"),
        ("2", "publish -> on the events topic (baseline)"),
        ("2", "publish -> signal, read_committed"),
        ("2", "publish -> signal, read_uncommitted"),
    ], out
    assert all(got == of == measured for _, _, got, of in rows), out

    for phase in ("1. the pipeline alone", "2. with the reference readers"):
        section = out.split(f"\n{phase} (achieved ", 1)[1]
        assert re.match(r"[\d.,]+/s\):\n  p99 ms per 5 s window:\n", section), out
        assert re.search(r"^  worker transactions: [1-9][\d,]* \(", section, re.M), out
        # the records came in busy fetches (brief, for a batch; streams.fetch_wait)
        fetches = r"^  worker fetches: busy [1-9][\d,]* \([\d,]+/s\), idle [\d,]+ \([\d,]+/s\)$"
        assert re.search(fetches, section, re.M), out
        assert re.search(r"^  CPU during the phase, .* worker [\d.]+ s", section, re.M), out

    # the target is at 1,000 events/s: a run at another rate says so and never claims it
    targets = out.split("\ntargets:\n", 1)[1].splitlines()
    latency = [line for line in targets if "p99 publish -> signal" in line]
    assert [re.sub(r".*\((read_\w+, [12]\. [\w ]+)\).*", r"\1", line) for line in latency] == [
        "read_committed, 1. the pipeline alone",
        "read_committed, 2. with the reference readers",
        "read_uncommitted, 2. with the reference readers",
    ], out
    assert all(": NOT met (" in line and f"ms at {RATE}/s)" in line for line in latency), out
    assert re.search(r"^restart \(memory store\): stopped in .* owned all \d+ parti", out, re.M)
