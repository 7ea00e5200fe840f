"""Produce requests written in one join (streams.produce_requests): aiokafka's bytes exactly."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.producer import sender
from aiokafka.protocol.produce import ProduceRequest, ProduceRequest_v3, ProduceRequest_v5
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
    assert install() and install()
    assert sender.ProduceRequest is JoinedProduceRequest
    uninstall()
    assert sender.ProduceRequest is ProduceRequest


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
