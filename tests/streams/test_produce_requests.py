"""Produce requests written in one join (streams.produce_requests): aiokafka's bytes exactly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaConnectionError
from aiokafka.producer import sender
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.produce import (
    ProduceRequest,
    ProduceRequest_v3,
    ProduceRequest_v5,
    ProduceResponse_v7,
)
from aiokafka.protocol.types import Array, Int32, Schema, String
from hypothesis import given
from hypothesis import strategies as st

from streams import produce_requests
from streams.produce_requests import JoinedProduceRequest, fits, install, uninstall


@pytest.fixture
def original_sender() -> Iterator[None]:
    """Whatever a test installs, aiokafka's own request class is back afterwards."""
    yield
    uninstall()


RECORDS = st.none() | st.binary(max_size=300) | st.binary(max_size=50).map(bytearray)
PARTITIONS = st.lists(st.tuples(st.integers(-(2**31), 2**31 - 1), RECORDS), max_size=4)
TOPICS = st.none() | st.lists(st.tuples(st.text(max_size=20), st.none() | PARTITIONS), max_size=4)


@given(
    st.none() | st.text(max_size=30),
    st.sampled_from([-1, 0, 1]),
    st.integers(0, 2**31 - 1),
    TOPICS,
    st.integers(0, 7),
)
def test_a_request_is_encoded_to_aiokafkas_bytes(
    transactional_id: str | None, acks: int, timeout: int, topics: list[Any], version: int
) -> None:
    args = {"required_acks": acks, "timeout": timeout, "topics": topics}
    args["transactional_id"] = transactional_id if version >= 3 else None
    versions = {ProduceRequest.API_KEY: (version, version)}
    expected = ProduceRequest(**args).prepare(versions)
    joined = JoinedProduceRequest(**args).prepare(versions)
    assert type(joined).API_VERSION == type(expected).API_VERSION == version
    assert joined.encode() == expected.encode()
    assert (type(joined).__module__ == produce_requests.__name__) == (version >= 3)
    # the header and what the response is read as are aiokafka's
    assert joined.RESPONSE_TYPE is expected.RESPONSE_TYPE
    header, want = (r.build_request_header(7, "c").encode() for r in (joined, expected))
    assert header == want


def test_it_is_installed_in_aiokafkas_sender_once(original_sender: None) -> None:
    assert sender.ProduceRequest is ProduceRequest
    original_send = AIOKafkaConnection.send
    assert install() and install()
    assert sender.ProduceRequest is JoinedProduceRequest
    assert AIOKafkaConnection.send is produce_requests._send
    uninstall()
    assert sender.ProduceRequest is ProduceRequest
    assert AIOKafkaConnection.send is original_send


class Written:
    """A connection's writer that keeps what is written, as bytes, and each write's type."""

    def __init__(self, fail: bool = False) -> None:
        self.data = bytearray()
        self.kinds: list[type] = []
        self.fail = fail

    def write(self, data: Any) -> None:
        if self.fail:
            raise ConnectionResetError("reset by peer")
        self.kinds.append(type(data))
        self.data += data

    async def drain(self) -> None:
        return None


async def written(send: Any, request: Any, expect_response: bool) -> tuple[Any, ...]:
    """What ``send`` writes for ``request`` on a connection that has sent two requests before,
    and what it then waits for: (bytes, write types, pending correlation ids and response
    types, what it returned)."""
    connection = AIOKafkaConnection("127.0.0.1", 9, client_id="tf-test")
    writer = Written()
    connection._writer = writer
    connection._versions = {ProduceRequest.API_KEY: (0, 7), MetadataRequest.API_KEY: (0, 1)}
    connection._correlation_id = 2
    waiting = send(connection, request, expect_response)
    pending = [(c, type(r).RESPONSE_TYPE) for c, r, _ in connection._requests]
    waiting.close()  # a coroutine, not awaited: nothing answers
    return bytes(writer.data), writer.kinds, pending, waiting.__qualname__


BATCHES = st.lists(st.binary(min_size=1, max_size=4000), min_size=1, max_size=5)


@given(st.text(max_size=10), BATCHES, st.booleans())
def test_a_connection_writes_a_joined_request_as_aiokafkas_does(
    transactional_id: str, batches: list[bytes], expect_response: bool
) -> None:
    topics = [("events", [(p, batch) for p, batch in enumerate(batches)])]
    args = {"transactional_id": transactional_id, "required_acks": -1, "timeout": 30_000}
    ours = asyncio.run(
        written(
            produce_requests._send, JoinedProduceRequest(**args, topics=topics), expect_response
        )
    )
    theirs = asyncio.run(
        written(AIOKafkaConnection.send, ProduceRequest(**args, topics=topics), expect_response)
    )
    assert ours[0] == theirs[0]  # the same bytes: size, header (correlation id 3), body
    response = ProduceResponse_v7 if expect_response else None
    assert ours[2] == theirs[2] == ([(3, response)] if response else [])
    assert ours[3] == theirs[3] == ("wait_for" if expect_response else "Written.drain")
    # the body went out as a view of the encoded request, not joined to its header
    assert ours[1] == [bytes, memoryview] and theirs[1] == [bytes]


def test_other_requests_are_sent_by_aiokafkas_own_send() -> None:
    request = MetadataRequest(topics=["events"])
    ours = asyncio.run(written(produce_requests._send, request, True))
    theirs = asyncio.run(written(AIOKafkaConnection.send, request, True))
    assert ours == theirs
    assert ours[1] == [bytes]


def test_a_broken_connection_is_closed_and_reported() -> None:
    async def broken() -> AIOKafkaConnection:
        connection = AIOKafkaConnection("127.0.0.1", 9)
        connection._writer = Written(fail=True)
        connection._versions = {ProduceRequest.API_KEY: (0, 7)}
        request = JoinedProduceRequest("t", -1, 1000, [("events", [(0, b"x")])])
        with pytest.raises(KafkaConnectionError, match=r"127\.0\.0\.1:9 broken: reset by peer"):
            produce_requests._send(connection, request)
        return connection

    assert not asyncio.run(broken()).connected()


def test_another_aiokafkas_send_stays_its_own(
    original_sender: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert produce_requests.sends_known()  # the aiokafka installed: if not, compare the steps
    original_send = AIOKafkaConnection.send
    monkeypatch.setattr(produce_requests, "_KNOWN_SENDS", frozenset({"another"}))
    assert not produce_requests.sends_known()
    with caplog.at_level(logging.WARNING, logger="trackerflow.worker"):
        assert install()  # the requests are still joined
    assert sender.ProduceRequest is JoinedProduceRequest
    assert AIOKafkaConnection.send is original_send
    assert "writes requests differently" in caplog.text


def test_a_send_without_source_is_not_known(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_source(_: Any) -> str:
        raise OSError("could not get source code")

    monkeypatch.setattr(produce_requests.inspect, "getsource", no_source)
    assert not produce_requests.sends_known()


TWO_INTS = Array(("p", Int32), ("q", Int32))  # not (partition, records)


@pytest.mark.parametrize(
    "schema",
    [
        Schema(("transactional_id", String("utf-8")), ("acks", Int32)),
        Schema(
            ("transactional_id", String("latin-1")),
            ("required_acks", ProduceRequest_v3.SCHEMA.fields[1]),
            ("timeout", Int32),
            ("topics", ProduceRequest_v3.SCHEMA.fields[3]),
        ),
        Schema(
            ("transactional_id", String("utf-8")),
            ("required_acks", ProduceRequest_v3.SCHEMA.fields[1]),
            ("timeout", Int32),
            ("topics", Array(("topic", String("utf-8")), ("partitions", Array(Int32)))),
        ),
        Schema(
            ("transactional_id", String("utf-8")),
            ("required_acks", ProduceRequest_v3.SCHEMA.fields[1]),
            ("timeout", Int32),
            (
                "topics",
                Array(("topic", String("utf-8")), ("partitions", TWO_INTS)),
            ),
        ),
    ],
)
def test_another_aiokafkas_requests_keep_their_own_encoding(
    schema: Schema,
    original_sender: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert fits()
    monkeypatch.setattr(ProduceRequest_v5, "SCHEMA", schema)
    assert not fits()
    with caplog.at_level(logging.WARNING, logger="trackerflow.worker"):
        assert not install()
    assert sender.ProduceRequest is ProduceRequest
    assert "encodes produce requests differently" in caplog.text
