"""``streams.liveness``: what the worker says about Kafka answering, and its log while it does not.

The worker's probe against a real broker that stops and starts again is in test_worker.py
(``test_a_broker_restart_under_a_running_worker_...``); here the state and the log lines, with
a clock the test moves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from streams import liveness
from streams.http_metrics import metrics_text
from streams.liveness import KafkaCheck, RepeatFilter, quiet_repeats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "streams.liveness"]


def test_an_outage_is_reported_logged_once_reminded_and_its_end_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="streams.liveness")
    clock = Clock()
    check = KafkaCheck(clock=clock)
    assert check.report() == {"answering": None, "unanswered_s": None, "error": None}

    check.answered({0: 3})
    assert check.report() == {"answering": True, "unanswered_s": 0.0, "error": None}
    assert check.lag == {0: 3}
    assert warnings(caplog) == []  # the first answer is no news

    clock.now += 7.0
    check.failed("no answer within 5 s")
    assert check.report() == {
        "answering": False,
        "unanswered_s": 7.0,  # since the last answer, not since the failed probe
        "error": "no answer within 5 s",
    }
    assert check.lag == {0: 3}  # as of the last answer
    clock.now += 30.0
    check.failed("KafkaConnectionError: closed")
    assert check.report()["error"] == "KafkaConnectionError: closed"
    assert len(warnings(caplog)) == 1  # the outage is logged once...
    clock.now += liveness.REMIND_S
    check.failed("KafkaConnectionError: closed")
    clock.now += 1.0
    check.failed("KafkaConnectionError: closed")
    assert len(warnings(caplog)) == 2  # ...and again after REMIND_S, not at every probe
    assert warnings(caplog)[1] == "Kafka has not answered for 97 s (KafkaConnectionError: closed)"

    clock.now += 2.0
    check.answered({0: 0, 1: 5})
    assert check.report() == {"answering": True, "unanswered_s": 0.0, "error": None}
    assert check.lag == {0: 0, 1: 5}
    assert warnings(caplog)[2] == "Kafka answers again, after 100.0 s without an answer"
    assert warnings(caplog)[0].startswith("Kafka does not answer (no answer within 5 s)")


def test_a_worker_kafka_never_answered_counts_from_its_first_failure() -> None:
    clock = Clock()
    check = KafkaCheck(clock=clock)
    check.failed("no answer within 5 s")
    clock.now += 4.0
    assert check.report()["unanswered_s"] == 4.0
    check.answered({})
    assert check.report()["answering"] is True


def probe(check: KafkaCheck, answer: object, positions: Mapping[TopicPartition, int]) -> None:
    async def end_offsets(tps: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        if isinstance(answer, BaseException):
            raise answer
        if answer is None:
            await asyncio.sleep(3600)
        assert isinstance(answer, Mapping)
        return answer

    asyncio.run(check.probe(end_offsets, [TopicPartition("e", 0)], lambda: positions))


def test_a_probe_gives_each_owned_partitions_lag_summed_over_its_topics() -> None:
    check = KafkaCheck()
    ends = {
        TopicPartition("events", 0): 120,
        TopicPartition("events.rekeyed", 0): 4,
        TopicPartition("events", 1): 50,
        TopicPartition("events", 2): 9,
    }
    positions = {
        TopicPartition("events", 0): 100,
        TopicPartition("events.rekeyed", 0): 1,
        TopicPartition("events", 1): 50,
        TopicPartition("events", 2): 12,  # committed past a stable offset read earlier
        TopicPartition("events", 3): 7,  # no answer for it: left out, not guessed
    }
    probe(check, ends, positions)
    assert check.report()["answering"] is True
    assert check.lag == {0: 23, 1: 0, 2: 0}


def test_a_probe_that_fails_or_gets_no_answer_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    check = KafkaCheck()
    probe(check, KafkaConnectionError("Connection at 127.0.0.1:9092 closed"), {})
    assert check.report()["error"] == (
        "KafkaConnectionError: KafkaConnectionError: Connection at 127.0.0.1:9092 closed"
    )
    probe(check, OSError(), {})
    assert check.report()["error"] == "OSError"
    monkeypatch.setattr(liveness, "PROBE_TIMEOUT_S", 0.05)
    probe(check, None, {})
    assert check.report()["answering"] is False
    assert check.report()["error"] == "no answer within 0.05 s"


def test_metrics_say_nothing_about_kafka_before_the_first_probe() -> None:
    check = KafkaCheck()
    text = metrics_text(lambda: {"kafka": check.report(), "lag": {}}).decode()
    assert "trackerflow_kafka" not in text
    check.failed("no answer within 5 s")  # never answered: seconds from the first failure
    text = metrics_text(lambda: {"kafka": check.report(), "lag": {}}).decode()
    assert "trackerflow_kafka_answering 0.0" in text
    assert "trackerflow_kafka_unanswered_seconds 0.0" in text


def record(name: str, message: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_repeated_aiokafka_lines_are_held_back_and_counted() -> None:
    clock = Clock()
    repeats = RepeatFilter("aiokafka", window_s=30.0, clock=clock)
    connect = "Unable connect to node with id %s: %s"
    first = record("aiokafka", connect, 1, "refused")
    assert repeats.filter(first)
    assert first.getMessage() == "Unable connect to node with id 1: refused"
    for second in range(29):
        clock.now += 1.0
        assert not repeats.filter(record("aiokafka", connect, 1, f"refused {second}"))
    # another kind of line, another logger under aiokafka, another level: each its own
    assert repeats.filter(record("aiokafka", "Unable to update metadata from %s", [1]))
    assert repeats.filter(record("aiokafka.consumer.fetcher", connect, 1, "x"))
    assert repeats.filter(record("aiokafka", connect, 1, "x", level=logging.WARNING))
    # other loggers are never held back
    for _ in range(3):
        assert repeats.filter(record("streams.worker", "folding %s failed", "t:0@1"))
        assert repeats.filter(record("aiokafkaesque", "same %s", 1))

    clock.now += 1.0  # the window has passed: the next one shows, with the count held back
    later = record("aiokafka", connect, 1, "refused again")
    assert repeats.filter(later)
    assert later.getMessage() == (
        "Unable connect to node with id 1: refused again (29 more like it in the last 30 s)"
    )
    clock.now += 31.0
    quiet = record("aiokafka", connect, 1, "refused")
    assert repeats.filter(quiet)
    assert quiet.getMessage() == "Unable connect to node with id 1: refused"  # none held back


def test_quiet_repeats_filters_every_root_handler() -> None:
    root = logging.getLogger()
    handlers = [logging.StreamHandler(), logging.StreamHandler()]
    for handler in handlers:
        root.addHandler(handler)
    try:
        repeats = quiet_repeats()
        assert all(repeats in handler.filters for handler in handlers)
    finally:
        for handler in handlers:
            root.removeHandler(handler)
