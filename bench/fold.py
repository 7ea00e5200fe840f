"""``make bench-fold``: offline decode + fold throughput, next to a plain JSON baseline.

In one run and one process: generate (deterministically, ``bench.generate``) a log of at least a
million events of realistic interleaved conversations, plus two logs with the same number of
events in 10-event and in 1,000-event conversations, into ``bench/out/`` (git-ignored). Then
measure, each the best of ``--runs`` runs with ``time.perf_counter`` over lines already in memory:

(a) ``json.loads`` per line — the baseline any Python consumer pays;
(b) ``events.decode_record`` + ``DialogueStateTracker.update`` on the conversation's tracker;
(c) (b) for 10-event conversations and for 1,000-event conversations;
(d) ``streams.replay`` reading the file itself (what ``trackerflow replay`` does, minus output);
(e) (b) with the Python decoder only, as an install without the compiled one runs.

(b) and (c) run with Python's default garbage-collector settings and again with the cyclic
collector paused, as ``trackerflow replay`` runs (see ``streams.replay.paused_gc``).

Targets (DESIGN.md §6): (b) at least 300,000 events/s per core; (c) long within 10% of short.

    python -m bench.fold [--events 1000000] [--short-long-events 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.generate import Plan, open_output, write
from events import Record, decode_record, record_decoder, wire
from processors import DialogueStateTracker
from streams.replay import Replay, paused_gc
from streams.sources import Source

OUT = Path(__file__).resolve().parent / "out"
TARGET_RATE = 300_000
TARGET_LONG_VS_SHORT = 0.90


def generate(path: Path, plan: Plan) -> list[bytes]:
    """Write the plan's log to ``path`` and return its lines."""
    started = time.perf_counter()
    with open_output(str(path)) as out:
        count = write(plan, out)
    lines = path.read_bytes().splitlines()
    took = time.perf_counter() - started
    print(
        f"generated {count:,} events -> {path} ({path.stat().st_size / 1e6:,.0f} MB, {took:.1f} s)"
    )
    return lines


def json_baseline(lines: list[bytes]) -> None:
    loads = json.loads
    for line in lines:
        loads(line)


def decode_fold(lines: list[bytes], decode: Callable[[bytes], Record] = decode_record) -> None:
    trackers: dict[str, DialogueStateTracker] = {}
    for line in lines:
        record = decode(line)
        tracker = trackers.get(record.sender_id)
        if tracker is None:
            tracker = trackers[record.sender_id] = DialogueStateTracker(record.sender_id)
        tracker.update(record.event)


def python_decoder_only(lines: list[bytes]) -> None:
    decode_fold(lines, wire.decode_record_python)


def replay_file(path: Path) -> Callable[[list[bytes]], None]:
    def run(_: list[bytes]) -> None:
        replay = Replay()
        with Source(str(path)) as source:
            for reject in replay.feed(source):
                raise AssertionError(f"generated line rejected: {reject.error}")

    return run


def best_of(
    runs: int, measure: Callable[[list[bytes]], None], lines: list[bytes], pause: bool
) -> float:
    """The shortest of ``runs`` timings, in seconds (garbage collected before each)."""
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        with paused_gc() if pause else contextlib.nullcontext():
            started = time.perf_counter()
            measure(lines)
            best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fold", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="mixed log size (1,000,000)")
    parser.add_argument("--short-long-events", type=int, default=200_000, help="(c) size (200,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement; best counts (3)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (7)")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    size = args.short_long_events
    mixed_path = OUT / f"mixed-{args.events}-seed{args.seed}.jsonl"
    mixed = generate(mixed_path, Plan(args.events, seed=args.seed))
    short = generate(OUT / f"short-10x{size}.jsonl", Plan(size, seed=args.seed, exact_length=10))
    long = generate(OUT / f"long-1000x{size}.jsonl", Plan(size, seed=args.seed, exact_length=1000))
    rows = [
        ("(a) json.loads per line (baseline)", json_baseline, mixed, False),
        ("(b) decode + fold, mixed conversations", decode_fold, mixed, False),
        ("(b) same, cyclic GC paused", decode_fold, mixed, True),
        ("(c) decode + fold, 10-event conversations", decode_fold, short, False),
        ("(c) decode + fold, 1,000-event conversations", decode_fold, long, False),
        ("(c) 10-event conversations, GC paused", decode_fold, short, True),
        ("(c) 1,000-event conversations, GC paused", decode_fold, long, True),
        ("(d) trackerflow replay path (file, GC paused)", replay_file(mixed_path), mixed, True),
        ("(e) (b) GC paused, Python decoder only", python_decoder_only, mixed, True),
    ]
    rates: list[float] = []
    print(
        f"\nbest of {args.runs} runs, single process, Python {sys.version.split()[0]}, "
        f"record decoder: {record_decoder()}"
    )
    print(f"{'measurement':48} {'events':>11} {'best s':>8} {'events/s':>11}")
    for name, measure, lines, pause in rows:
        seconds = best_of(args.runs, measure, lines, pause)
        rate = len(lines) / seconds
        rates.append(rate)
        print(f"{name:48} {len(lines):>11,} {seconds:>8.3f} {rate:>11,.0f}")
    return report(rates)


def report(rates: list[float]) -> int:
    """Print the ratios and the targets; exit status 0 either way (a benchmark, not a test)."""
    baseline, mixed, mixed_paused, short, long, short_paused, long_paused, _, _ = rates
    print(
        f"\ndecode+fold / json.loads baseline: {mixed / baseline:.2f} (GC paused: "
        f"{mixed_paused / baseline:.2f})"
    )
    print(
        f"long / short conversations:        {long / short:.2f} (GC paused: "
        f"{long_paused / short_paused:.2f})"
    )
    for label, rate, ratio in (
        ("default GC", mixed, long / short),
        ("GC paused", mixed_paused, long_paused / short_paused),
    ):
        ok_rate = "met" if rate >= TARGET_RATE else "NOT met"
        ok_flat = "met" if ratio >= TARGET_LONG_VS_SHORT else "NOT met"
        print(
            f"{label}: >= {TARGET_RATE:,} events/s per core {ok_rate} ({rate:,.0f}); "
            f"long within 10% of short {ok_flat} ({ratio:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
