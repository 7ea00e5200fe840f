"""Generate realistic Rasa event logs: many conversations interleaved as on a Kafka topic.

Each line is one broker record exactly as Rasa's ``KafkaEventBroker`` publishes it:
``json.dumps({"sender_id": ..., **event.as_dict()})``. Conversations start as a Poisson process
and their events are merged by timestamp, so conversations interleave the way a topic carries
them; within a conversation timestamps only grow. Everything follows from ``--seed`` (stdlib
``random`` only; no clock): the same arguments always give the same bytes.

Examples::

    python -m bench.generate --events 2000 --seed 7 --output deploy/samples/conversations.jsonl
    python -m bench.generate --events 200000 --exact-length 1000 --output bench/out/long.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import io
import json
import math
import random
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import IO, Any

from bench.conversation import Conversation

START = 1_700_000_000.0  # 2023-11-14T22:13:20Z: a fixed origin keeps files independent of the clock
JSON = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What to generate.

    ``events`` records in total. Conversation lengths follow a log-normal number of turns with
    mean ``mean_turns``, and conversations are complete (only the last one is cut to make the
    total exact) — unless ``exact_length`` is set: then every conversation has exactly that many
    events, cut wherever that falls in a turn (the last one takes the remainder).
    """

    events: int
    seed: int = 7
    mean_turns: float = 8.0
    turns_sigma: float = 0.8
    exact_length: int | None = None
    arrival_rate: float = 0.5  # new conversations per second

    def __post_init__(self) -> None:
        if self.events < 0 or self.mean_turns <= 0 or self.arrival_rate <= 0:
            raise ValueError("events must be >= 0; mean turns and arrival rate must be > 0")
        if self.exact_length is not None and self.exact_length < 1:
            raise ValueError("exact length must be at least 1")


def _conversations(plan: Plan, rng: random.Random) -> Iterator[tuple[float, str, Iterator[JSON]]]:
    """(start time, sender id, event stream) of each conversation, by start time; the streams
    add up to exactly ``plan.events`` events (the last conversation is cut to fit)."""
    t, left = START, plan.events
    mu = math.log(plan.mean_turns) - plan.turns_sigma**2 / 2
    while left > 0:
        t += rng.expovariate(plan.arrival_rate)
        sender = f"{rng.getrandbits(128):032x}"
        seed = rng.getrandbits(64)
        if plan.exact_length:
            turns, size = None, plan.exact_length
        else:
            turns = max(1, round(rng.lognormvariate(mu, plan.turns_sigma)))
            dry_run = Conversation(random.Random(seed), sender, t).events(turns)
            size = sum(1 for _ in dry_run)
        size = min(size, left)
        left -= size
        yield t, sender, islice(Conversation(random.Random(seed), sender, t).events(turns), size)


def records(plan: Plan) -> Iterator[JSON]:
    """Broker records of all conversations, merged by timestamp."""
    rng = random.Random(plan.seed)
    starts = _conversations(plan, rng)
    heap: list[tuple[float, int, str, JSON, Iterator[JSON]]] = []
    pending = next(starts, None)
    sequence = 0
    while True:
        while pending is not None and (not heap or pending[0] <= heap[0][0]):
            _, sender, stream = pending
            first = next(stream, None)
            if first is not None:
                sequence += 1
                heapq.heappush(heap, (first["timestamp"], sequence, sender, first, stream))
            pending = next(starts, None)
        if not heap:
            return
        _, _, sender, event, stream = heapq.heappop(heap)
        yield {"sender_id": sender, **event}
        following = next(stream, None)
        if following is not None:
            sequence += 1
            heapq.heappush(heap, (following["timestamp"], sequence, sender, following, stream))


def write(plan: Plan, out: IO[str]) -> int:
    """Write the records as JSON lines (Rasa's ``json.dumps``); returns how many."""
    count = 0
    batch: list[str] = []
    for record in records(plan):
        batch.append(json.dumps(record) + "\n")
        if len(batch) == 4096:
            out.writelines(batch)
            count += len(batch)
            batch.clear()
    out.writelines(batch)
    return count + len(batch)


def open_output(path: str) -> AbstractContextManager[IO[str]]:
    """A text stream for ``path`` (``-`` = stdout; ``.gz`` = gzip with a fixed mtime)."""
    if path == "-":
        return nullcontext(sys.stdout)
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.GzipFile(path, mode="wb", mtime=0), encoding="utf-8")
    return open(path, "w", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.generate",
        description="Generate interleaved Rasa broker records (JSON lines) deterministically.",
    )
    parser.add_argument("--events", type=int, default=2000, help="records in total (2000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument("--mean-turns", type=float, default=8.0, help="mean turns (8)")
    parser.add_argument("--turns-sigma", type=float, default=0.8, help="log-normal sigma (0.8)")
    parser.add_argument("--exact-length", type=int, help="events per conversation, exactly")
    parser.add_argument("--arrival-rate", type=float, default=0.5, help="conversations/s (0.5)")
    parser.add_argument("--output", default="-", help="file (.gz compresses) or - (stdout)")
    args = parser.parse_args(argv)
    plan = Plan(
        args.events,
        args.seed,
        args.mean_turns,
        args.turns_sigma,
        args.exact_length,
        args.arrival_rate,
    )
    with open_output(args.output) as out:
        count = write(plan, out)
    print(f"wrote {count} records to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
