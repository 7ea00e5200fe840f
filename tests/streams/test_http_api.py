"""The HTTP API over real HTTP on loopback: aiohttp test servers around an in-memory service.

The fake service keeps real ``DialogueStateTracker`` objects (appending folds the events), so
every answer is checked against the tracker API itself (``current_state``,
``travel_back_in_time``, ``export_stories``), not against hard-coded states; Rasa's error bodies,
auth rules and query parameter rules come from rasa-semantics.md §7. Routing runs two API
servers and sends requests between them over real HTTP.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from yarl import URL

from events import Event, decode_event
from processors import DialogueStateTracker, Domain, EventVerbosity
from streams.http_api import (
    MAX_LIMIT,
    ApiSettings,
    ConversationService,
    ConversationUnavailable,
    create_app,
)
from streams.http_forward import ROUTED_FROM, ROUTED_TO

VERSION = "9.9.9-test"
NOW = 1_700_000_000.5
SECRET = "a-jwt-secret-that-is-at-least-32-bytes-long"
TOKEN = "s3cret-token"

Client = TestClient[web.Request, web.Application]

# -- events ------------------------------------------------------------------------------------


def listen(t: float) -> dict[str, Any]:
    return {"event": "action", "timestamp": t, "name": "action_listen"}


def user(t: float, text: str, intent: str) -> dict[str, Any]:
    parse = {"intent": {"name": intent, "confidence": 1.0}, "entities": [], "text": text}
    return {"event": "user", "timestamp": t, "text": text, "parse_data": parse}


def action(t: float, name: str) -> dict[str, Any]:
    return {"event": "action", "timestamp": t, "name": name}


def bot(t: float, text: str) -> dict[str, Any]:
    return {"event": "bot", "timestamp": t, "text": text}


def session_start(t: float) -> list[dict[str, Any]]:
    return [
        action(t, "action_session_start"),
        {"event": "session_started", "timestamp": t},
        listen(t),
    ]


# two sessions, a restart and a rewind in the second: every verbosity lists different events
CONVERSATION: list[dict[str, Any]] = [
    *session_start(1.0),
    user(2.0, "hi", "greet"),
    action(3.0, "utter_greet"),
    bot(3.0, "Hey!"),
    listen(3.0),
    *session_start(10.0),
    user(11.0, "book", "book"),
    {"event": "slot", "timestamp": 11.5, "name": "city", "value": "Paris"},
    action(12.0, "action_restart"),
    {"event": "restart", "timestamp": 12.0},
    listen(12.0),
    user(13.0, "bye", "goodbye"),
    action(14.0, "utter_goodbye"),
    listen(14.0),
    user(15.0, "oops", "deny"),
    {"event": "rewind", "timestamp": 16.0},
]


def reference(conversation_id: str, events: Iterable[dict[str, Any]]) -> DialogueStateTracker:
    return DialogueStateTracker.from_dict(conversation_id, list(events))


def as_json(value: Any) -> Any:
    """``value`` as it looks after a JSON round trip (what a client receives)."""
    return orjson.loads(orjson.dumps(value))


def state(tracker: DialogueStateTracker, verbosity: EventVerbosity) -> Any:
    return as_json(tracker.current_state(verbosity))


# -- the fake worker -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The settings the API reads (a stand-in for ``streams.settings.Settings``)."""

    auth_token: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    jwt_method: str = "HS256"
    max_body_bytes: int = 1 << 20


class FakeService:
    """An in-memory worker: a dict of real trackers; ``owners`` names other workers."""

    version = VERSION

    def __init__(self, conversations: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.trackers = {cid: reference(cid, ev) for cid, ev in (conversations or {}).items()}
        self.owners: dict[str, str] = {}
        self.peer_urls: list[str] = []
        self.calls: list[tuple[str, str, list[Event]]] = []
        self.failure: Exception | None = None
        self.delay = 0.0

    async def tracker(self, conversation_id: str) -> DialogueStateTracker | None:
        return self.trackers.get(conversation_id)

    async def conversations(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        ids = sorted(self.trackers)
        page = [
            {"sender_id": cid, "events": len(self.trackers[cid].events)}
            for cid in ids[offset : offset + limit]
        ]
        return page, len(ids)

    async def reminders(self, conversation_id: str) -> list[dict[str, Any]] | None:
        if conversation_id not in self.trackers:
            return None
        return [{"name": "r1", "due": 1.0}]

    async def append(self, conversation_id: str, events: list[Event]) -> None:
        await self._work("append", conversation_id, events)
        tracker = self.trackers.setdefault(conversation_id, DialogueStateTracker(conversation_id))
        tracker.update_with_events(events)

    async def replace(self, conversation_id: str, events: list[Event]) -> None:
        await self._work("replace", conversation_id, events)
        self.trackers[conversation_id] = DialogueStateTracker.from_events(conversation_id, events)

    async def _work(self, kind: str, conversation_id: str, events: list[Event]) -> None:
        self.calls.append((kind, conversation_id, events))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failure is not None:
            raise self.failure

    def peers(self) -> list[str]:
        return self.peer_urls

    def owner(self, conversation_id: str) -> str | None:
        return self.owners.get(conversation_id)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "conversations": len(self.trackers)}


def asynchronous(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@asynccontextmanager
async def serving(
    service: ConversationService, settings: ApiSettings | None = None, **options: Any
) -> AsyncIterator[Client]:
    app = create_app(service, settings or Config(), clock=lambda: NOW, **options)
    async with TestClient(TestServer(app)) as client:
        yield client


def base_url(client: Client) -> str:
    return str(client.server.make_url("")).rstrip("/")


def path(conversation_id: str, tail: str) -> URL:
    """``/conversations/<id>/<tail>`` with the id percent-encoded (``/`` kept)."""
    return URL.build(path=f"/conversations/{conversation_id}/{tail}")


def bearer(payload: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(payload, key, algorithm=algorithm)}"}


def rasa_error(body: Any, code: int, reason: str) -> None:
    """``body`` has exactly Rasa's error keys, with this code and reason."""
    assert list(body) == ["version", "status", "message", "reason", "details", "help", "code"]
    assert body["version"] == VERSION
    assert body["status"] == "failure"
    assert body["help"] is None
    assert (body["code"], body["reason"]) == (code, reason)
    assert isinstance(body["message"], str) and body["message"]


# -- /health, /version, unknown routes -----------------------------------------------------------


@asynchronous
async def test_health_and_version_need_no_auth() -> None:
    service = FakeService({"c1": CONVERSATION})
    async with serving(service, Config(auth_token=SecretStr(TOKEN))) as client:
        health = await client.get("/health")
        assert health.status == 200
        assert await health.json() == {"status": "ok", "conversations": 1}
        version = await client.get("/version")
        assert version.status == 200
        assert await version.json() == {"version": VERSION, "minimum_compatible_version": VERSION}
        tracker = await client.get(path("c1", "tracker"))
        assert tracker.status == 401


class WorkerLikeService(FakeService):
    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "uptime_s": 12.5,
            "partitions": [0, 3],
            "records": {"folded": 40, "skipped": 1, "rekeyed": 2, "replaced": 0, "dead": 3},
            "transactions": 7,
            "store": "rocksdb",
            "restored_records": 120,
            "fetches": {"busy": 30, "idle": 4},
            "reminders": {"fired": 5, "missed": 1, "pending": 9},
            "kafka": {"answering": False, "unanswered_s": 31.5, "error": "no answer within 5 s"},
            "lag": {"0": 17, "3": 0},
            "failing": [{"partitions": [3], "error": "x", "failed_transactions": 2}],
        }


@asynchronous
async def test_metrics_are_the_health_numbers_for_prometheus_without_auth() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async with serving(WorkerLikeService(), Config(auth_token=SecretStr(TOKEN))) as client:
        answer = await client.get("/metrics")
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await answer.text()
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        assert samples == {
            ("trackerflow_records_total", (("outcome", "dead"),)): 3,
            ("trackerflow_records_total", (("outcome", "folded"),)): 40,
            ("trackerflow_records_total", (("outcome", "rekeyed"),)): 2,
            ("trackerflow_records_total", (("outcome", "replaced"),)): 0,
            ("trackerflow_records_total", (("outcome", "skipped"),)): 1,
            ("trackerflow_transactions_total", ()): 7,
            ("trackerflow_restored_records_total", ()): 120,
            ("trackerflow_fetches_total", (("wait", "busy"),)): 30,
            ("trackerflow_fetches_total", (("wait", "idle"),)): 4,
            ("trackerflow_reminders_total", (("outcome", "fired"),)): 5,
            ("trackerflow_reminders_total", (("outcome", "missed"),)): 1,
            ("trackerflow_reminders_pending", ()): 9,
            ("trackerflow_partitions_owned", ()): 2,
            ("trackerflow_uptime_seconds", ()): 12.5,
            ("trackerflow_kafka_answering", ()): 0,
            ("trackerflow_kafka_unanswered_seconds", ()): 31.5,
            ("trackerflow_lag_records", (("partition", "0"),)): 17,
            ("trackerflow_lag_records", (("partition", "3"),)): 0,
            ("trackerflow_failing_partitions", ()): 1,
        }
        # a report without the worker's numbers gives no metrics, not an error
        async with serving(FakeService()) as bare:
            empty = await bare.get("/metrics")
            assert empty.status == 200 and "trackerflow_" not in await empty.text()


@asynchronous
async def test_minimum_compatible_version_can_be_given() -> None:
    async with serving(FakeService(), minimum_compatible_version="0.1.0") as client:
        body = await (await client.get("/version")).json()
        assert body == {"version": VERSION, "minimum_compatible_version": "0.1.0"}


@asynchronous
async def test_unknown_routes_and_methods_answer_json_errors() -> None:
    async with serving(FakeService()) as client:
        missing = await client.get("/nowhere")
        assert missing.status == 404
        rasa_error(await missing.json(), 404, "NotFound")
        wrong = await client.delete(path("c1", "tracker"))
        assert wrong.status == 405
        assert "GET" in wrong.headers["Allow"]
        rasa_error(await wrong.json(), 405, "MethodNotAllowed")


# -- GET tracker ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("include_events", "verbosity"),
    [
        (None, EventVerbosity.AFTER_RESTART),
        ("", EventVerbosity.AFTER_RESTART),
        ("NONE", EventVerbosity.NONE),
        ("applied", EventVerbosity.APPLIED),
        ("After_Restart", EventVerbosity.AFTER_RESTART),
        ("all", EventVerbosity.ALL),
    ],
)
@asynchronous
async def test_tracker_lists_the_events_include_events_asks_for(
    include_events: str | None, verbosity: EventVerbosity
) -> None:
    expected = state(reference("c1", CONVERSATION), verbosity)
    async with serving(FakeService({"c1": CONVERSATION})) as client:
        query = {} if include_events is None else {"include_events": include_events}
        response = await client.get(path("c1", "tracker"), params=query)
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == expected


def test_the_verbosities_differ_on_the_test_conversation() -> None:
    """Otherwise the test above could not tell them apart."""
    tracker = reference("c1", CONVERSATION)
    listed = [tracker.current_state(v)["events"] for v in EventVerbosity]
    assert listed[0] is None
    assert len({len(events) for events in listed[1:]}) == 3


@asynchronous
async def test_invalid_include_events_is_rasas_400() -> None:
    async with serving(FakeService({"c1": CONVERSATION})) as client:
        response = await client.get(path("c1", "tracker"), params={"include_events": "SOME"})
        assert response.status == 400
        assert await response.json() == {
            "version": VERSION,
            "status": "failure",
            "message": "Invalid parameter value for 'include_events'. "
            "Should be one of NONE, APPLIED, AFTER_RESTART, ALL",
            "reason": "BadRequest",
            "details": {"parameter": "include_events", "in": "query"},
            "help": None,
            "code": 400,
        }


@pytest.mark.parametrize("until", [0.5, 2.0, 3.0, 11.5, 1e9])
@asynchronous
async def test_until_travels_back_in_time(until: float) -> None:
    expected = reference("c1", CONVERSATION).travel_back_in_time(until)
    async with serving(FakeService({"c1": CONVERSATION})) as client:
        response = await client.get(
            path("c1", "tracker"), params={"until": str(until), "include_events": "ALL"}
        )
        assert await response.json() == state(expected, EventVerbosity.ALL)


@pytest.mark.parametrize("until", ["yesterday", "", "1.0.0"])
@asynchronous
async def test_an_unparsable_until_is_ignored(until: str) -> None:
    full = state(reference("c1", CONVERSATION), EventVerbosity.ALL)
    async with serving(FakeService({"c1": CONVERSATION})) as client:
        response = await client.get(
            path("c1", "tracker"), params={"until": until, "include_events": "ALL"}
        )
        assert response.status == 200
        assert await response.json() == full


@asynchronous
async def test_an_unknown_conversation_is_an_empty_tracker_that_is_not_stored() -> None:
    service = FakeService()
    domain = Domain.from_dict({"slots": {"city": {"type": "text", "mappings": []}}})
    async with serving(service, domain=domain) as client:
        response = await client.get(path("new-one", "tracker"), params={"until": "5"})
        assert response.status == 200
        body = await response.json()
        assert body == state(DialogueStateTracker("new-one", domain), EventVerbosity.AFTER_RESTART)
        assert body["events"] == []
        assert "city" in body["slots"]
    assert service.trackers == {}


@pytest.mark.parametrize("conversation_id", ["a/b/c", "with space", "ümlaut", "tracker"])
@asynchronous
async def test_conversation_ids_may_contain_slashes_and_anything_else(
    conversation_id: str,
) -> None:
    service = FakeService({conversation_id: CONVERSATION[:5]})
    async with serving(service) as client:
        response = await client.get(path(conversation_id, "tracker"))
        assert (await response.json())["sender_id"] == conversation_id
        encoded = URL("/conversations/" + conversation_id.replace("/", "%2F") + "/tracker")
        again = await client.get(encoded)
        assert (await again.json())["sender_id"] == conversation_id


# -- POST and PUT tracker/events -----------------------------------------------------------------


@asynchronous
async def test_post_one_event_appends_it_and_answers_the_new_state() -> None:
    service = FakeService({"c1": CONVERSATION[:4]})
    async with serving(service) as client:
        response = await client.post(path("c1", "tracker/events"), json=CONVERSATION[4])
        assert response.status == 200
        assert await response.json() == state(
            reference("c1", CONVERSATION[:5]), EventVerbosity.AFTER_RESTART
        )
    assert [(kind, cid, len(events)) for kind, cid, events in service.calls] == [
        ("append", "c1", 1)
    ]


@asynchronous
async def test_post_a_list_appends_all_and_include_events_applies() -> None:
    service = FakeService()
    async with serving(service) as client:
        response = await client.post(
            path("c1", "tracker/events"), json=CONVERSATION, params={"include_events": "APPLIED"}
        )
        assert response.status == 200
        assert await response.json() == state(reference("c1", CONVERSATION), EventVerbosity.APPLIED)
    assert service.calls[0][2] == [decode_event(e) for e in CONVERSATION]


@asynchronous
async def test_posted_events_without_timestamp_get_the_clock_time() -> None:
    service = FakeService()
    async with serving(service) as client:
        response = await client.post(
            path("c1", "tracker/events"), json=[{"event": "action", "name": "action_listen"}]
        )
        body = await response.json()
        assert body["events"][0]["timestamp"] == NOW
        assert body["latest_event_time"] == NOW


@asynchronous
async def test_post_an_empty_list_changes_nothing() -> None:
    service = FakeService({"c1": CONVERSATION})
    async with serving(service) as client:
        response = await client.post(path("c1", "tracker/events"), json=[])
        assert response.status == 200
        assert await response.json() == state(
            reference("c1", CONVERSATION), EventVerbosity.AFTER_RESTART
        )
    assert service.calls == []


@pytest.mark.parametrize(
    ("body", "index", "words"),
    [
        ({"event": "no_such_event"}, 0, "no_such_event"),
        ([listen(1.0), {"event": "slot", "value": 1}], 1, "name"),
        ([listen(1.0), listen(2.0), "action_listen"], 2, "JSON object"),
        ([listen(1.0), {"event": "user", "timestamp": "soon"}], 1, "timestamp"),
    ],
)
@asynchronous
async def test_a_bad_event_is_a_400_naming_its_index(body: Any, index: int, words: str) -> None:
    service = FakeService()
    async with serving(service) as client:
        response = await client.post(path("c1", "tracker/events"), json=body)
        assert response.status == 400
        error = await response.json()
        rasa_error(error, 400, "BadRequest")
        assert f"Event #{index} " in error["message"]
        assert words in error["message"]
        assert error["details"]["index"] == index
        assert error["details"]["in"] == "body"
    assert service.calls == []


@asynchronous
async def test_put_replaces_the_history() -> None:
    service = FakeService({"c1": CONVERSATION})
    replacement = CONVERSATION[:5]
    async with serving(service) as client:
        response = await client.put(
            path("c1", "tracker/events"), json=replacement, params={"include_events": "ALL"}
        )
        assert response.status == 200
        assert await response.json() == state(reference("c1", replacement), EventVerbosity.ALL)
    assert len(service.trackers["c1"].events) == 5
    assert service.calls[0][0] == "replace"


@asynchronous
async def test_put_needs_a_list() -> None:
    service = FakeService({"c1": CONVERSATION})
    async with serving(service) as client:
        response = await client.put(path("c1", "tracker/events"), json=listen(1.0))
        assert response.status == 400
        error = await response.json()
        rasa_error(error, 400, "BadRequest")
        assert "list" in error["message"]
    assert service.calls == []


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'[{"event": "action", "name": "action_listen",}]', "line 1 column 45"),
        (b'[\n  {"event": "restart"}\n  {"event": "restart"}\n]', "line 3 column 3"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
@asynchronous
async def test_malformed_json_is_a_400_saying_where(body: bytes, where: str) -> None:
    async with serving(FakeService()) as client:
        for method in ("POST", "PUT"):
            response = await client.request(method, path("c1", "tracker/events"), data=body)
            assert response.status == 400
            error = await response.json()
            rasa_error(error, 400, "BadRequest")
            assert "not valid JSON" in error["message"]
            assert where in error["message"]


@asynchronous
async def test_an_empty_body_is_a_400() -> None:
    async with serving(FakeService()) as client:
        response = await client.post(path("c1", "tracker/events"), data=b" ")
        assert response.status == 400
        assert "empty" in (await response.json())["message"]


# -- body limit ----------------------------------------------------------------------------------


@asynchronous
async def test_bodies_over_max_body_bytes_are_413() -> None:
    events = orjson.dumps([listen(float(i)) for i in range(20)])
    service = FakeService()
    async with serving(service, Config(max_body_bytes=len(events) - 1)) as client:
        response = await client.post(path("c1", "tracker/events"), data=events)
        assert response.status == 413
        error = await response.json()
        rasa_error(error, 413, "PayloadTooLarge")
        assert f"is {len(events)} bytes, over the limit of {len(events) - 1} " in error["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
            for start in range(0, len(events), 100):
                yield events[start : start + 100]

        chunked = await client.post(path("c1", "tracker/events"), data=chunks())
        assert chunked.status == 413
        rasa_error(await chunked.json(), 413, "PayloadTooLarge")
    assert service.calls == []
    async with serving(service, Config(max_body_bytes=len(events))) as client:
        exact = await client.post(path("c1", "tracker/events"), data=events)
        assert exact.status == 200


# -- story ---------------------------------------------------------------------------------------


def two_sessions() -> list[dict[str, Any]]:
    return [
        *session_start(1.0),
        user(2.0, "hi", "greet"),
        action(3.0, "utter_greet"),
        *session_start(10.0),
        user(11.0, "bye", "goodbye"),
        action(12.0, "utter_goodbye"),
    ]


@asynchronous
async def test_story_is_the_last_session_as_yaml_test_stories() -> None:
    events = two_sessions()
    async with serving(FakeService({"c1": events})) as client:
        response = await client.get(path("c1", "story"))
        assert response.status == 200
        assert response.content_type == "text/yaml"
        text = await response.text()
    assert text == reference("c1", events[6:]).export_stories(e2e=True)
    document = yaml.safe_load(text)
    assert document["version"] == "3.1"
    [story] = document["stories"]
    assert story["story"] == "c1"
    assert story["steps"] == [{"intent": "goodbye", "user": "bye"}, {"action": "utter_goodbye"}]
    assert not any(step.get("intent") == "greet" for step in story["steps"])


@asynchronous
async def test_story_of_all_sessions_names_each() -> None:
    async with serving(FakeService({"c1": two_sessions()})) as client:
        response = await client.get(path("c1", "story"), params={"all_sessions": "True"})
        document = yaml.safe_load(await response.text())
        assert [s["story"] for s in document["stories"]] == ["c1, story 1", "c1, story 2"]
        not_true = await client.get(path("c1", "story"), params={"all_sessions": "yes"})
        assert [s["story"] for s in yaml.safe_load(await not_true.text())["stories"]] == ["c1"]


@asynchronous
async def test_story_until_cuts_each_session_and_drops_empty_ones() -> None:
    async with serving(FakeService({"c1": two_sessions()})) as client:
        response = await client.get(
            path("c1", "story"), params={"all_sessions": "true", "until": "2.5"}
        )
        document = yaml.safe_load(await response.text())
        [story] = document["stories"]
        assert story["story"] == "c1"  # one left: no ", story n"
        assert story["steps"] == [{"intent": "greet", "user": "hi"}]
        last = await client.get(path("c1", "story"), params={"until": "2.5"})
        assert yaml.safe_load(await last.text()) == {"version": "3.1"}
        ignored = await client.get(path("c1", "story"), params={"until": "later"})
        assert await ignored.text() == reference("c1", two_sessions()[6:]).export_stories(e2e=True)


@asynchronous
async def test_story_of_an_unknown_conversation_is_404() -> None:
    async with serving(FakeService()) as client:
        response = await client.get(path("nobody", "story"))
        assert response.status == 404
        error = await response.json()
        rasa_error(error, 404, "Not found")
        assert error["message"] == "Conversation ID not found."


# -- reminders -----------------------------------------------------------------------------------


@asynchronous
async def test_reminders_are_listed_per_conversation() -> None:
    async with serving(FakeService({"c1": CONVERSATION[:1]})) as client:
        found = await client.get(path("c1", "reminders"))
        assert found.status == 200
        assert await found.json() == {"sender_id": "c1", "reminders": [{"name": "r1", "due": 1.0}]}
        unknown = await client.get(path("nobody", "reminders"))
        assert unknown.status == 404
        rasa_error(await unknown.json(), 404, "Not found")


# -- listing -------------------------------------------------------------------------------------


@asynchronous
async def test_conversations_are_paged() -> None:
    ids = [f"c{i:04d}" for i in range(250)]
    service = FakeService(dict.fromkeys(ids, CONVERSATION[:2]))
    async with serving(service) as client:
        first = await (await client.get("/conversations")).json()
        assert (first["total"], first["offset"], first["limit"]) == (250, 0, 100)
        assert [c["sender_id"] for c in first["conversations"]] == ids[:100]
        last = await (await client.get("/conversations", params={"offset": "240"})).json()
        assert [c["sender_id"] for c in last["conversations"]] == ids[240:]
        page = await client.get("/conversations", params={"offset": "10", "limit": "5"})
        assert await page.json() == {
            "conversations": [{"sender_id": cid, "events": 2} for cid in ids[10:15]],
            "total": 250,
            "offset": 10,
            "limit": 5,
        }
        most = await client.get("/conversations", params={"limit": str(MAX_LIMIT)})
        assert len((await most.json())["conversations"]) == 250


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("limit", "1001"),
        ("limit", "-1"),
        ("limit", "ten"),
        ("offset", "-5"),
        ("offset", "1.5"),
        ("scope", "everything"),
    ],
)
@asynchronous
async def test_bad_paging_values_are_400(parameter: str, value: str) -> None:
    async with serving(FakeService()) as client:
        response = await client.get("/conversations", params={parameter: value})
        assert response.status == 400
        error = await response.json()
        rasa_error(error, 400, "BadRequest")
        assert error["details"] == {"parameter": parameter, "in": "query"}


@asynchronous
async def test_the_list_merges_every_workers_conversations_in_id_order() -> None:
    mine = {f"a{i:03d}": CONVERSATION[:1] for i in range(0, 300, 2)}
    theirs = {f"a{i:03d}": CONVERSATION[:2] for i in range(1, 300, 2)}
    settings = Config(auth_token=SecretStr(TOKEN))
    service_a, service_b = FakeService(mine), FakeService(theirs)
    async with serving(service_a, settings) as a, serving(service_b, settings) as b:
        service_a.peer_urls = [base_url(b)]
        query = {"token": TOKEN, "offset": "95", "limit": "10"}
        page = await (await a.get("/conversations", params=query)).json()
        assert page["total"] == 300
        assert [c["sender_id"] for c in page["conversations"]] == [
            f"a{i:03d}" for i in range(95, 105)
        ]
        assert [c["events"] for c in page["conversations"]] == [2, 1] * 5  # B's odd, A's even
        local = await a.get("/conversations", params={"token": TOKEN, "scope": "local"})
        assert (await local.json())["total"] == 150
        refused = await a.get("/conversations")  # no token: refused before asking anyone
        assert refused.status == 401


@asynchronous
async def test_the_list_fails_loudly_when_a_worker_cannot_answer() -> None:
    service = FakeService({"c1": CONVERSATION[:1]})
    service.peer_urls = [f"http://127.0.0.1:{closed_port()}"]
    async with serving(service) as client:
        response = await client.get("/conversations")
        assert response.status == 502
        error = await response.json()
        assert "cannot reach the worker" in error["message"]
    settings = Config(auth_token=SecretStr(TOKEN))
    other = FakeService()
    async with serving(other, settings) as b:  # B demands a token A's caller did not send
        service.peer_urls = [base_url(b)]
        async with serving(service) as a:
            response = await a.get("/conversations")
            assert response.status == 502
            assert "answered 401" in (await response.json())["message"]


# -- auth ----------------------------------------------------------------------------------------

TOKEN_AND_JWT = Config(auth_token=SecretStr(TOKEN), jwt_secret=SecretStr(SECRET))


@pytest.mark.parametrize(
    ("settings", "query", "headers", "status"),
    [
        (Config(), {}, {}, 200),
        (Config(auth_token=SecretStr(TOKEN)), {"token": TOKEN}, {}, 200),
        (Config(auth_token=SecretStr(TOKEN)), {"token": "wrong"}, {}, 401),
        (Config(auth_token=SecretStr(TOKEN)), {"token": ""}, {}, 401),
        (Config(auth_token=SecretStr(TOKEN)), {}, {}, 401),
        (Config(auth_token=SecretStr("")), {"token": ""}, {}, 401),
        (TOKEN_AND_JWT, {"token": TOKEN}, {"Authorization": "Bearer garbage"}, 200),
        (TOKEN_AND_JWT, {}, bearer({"user": {"username": "x", "role": "admin"}}), 200),
        (TOKEN_AND_JWT, {}, bearer({"user": {"username": "alice", "role": "user"}}), 200),
        (TOKEN_AND_JWT, {}, bearer({"user": {"username": "bob", "role": "user"}}), 403),
        (TOKEN_AND_JWT, {}, bearer({"user": {"username": "alice", "role": "guest"}}), 403),
        (TOKEN_AND_JWT, {}, bearer({"sub": "alice"}), 403),
        (TOKEN_AND_JWT, {}, bearer({"user": {"role": "admin"}}, key=SECRET + "x"), 401),
        (TOKEN_AND_JWT, {}, bearer({"user": {"role": "admin"}, "exp": 1}), 401),
        (TOKEN_AND_JWT, {}, {"Authorization": "Basic YWxpY2U6cHc="}, 401),
        (TOKEN_AND_JWT, {}, {}, 401),
        (Config(jwt_secret=SecretStr("")), {}, {}, 200),
        (Config(jwt_secret=SecretStr(SECRET)), {"token": TOKEN}, {}, 401),
        (Config(), {"token": "anything"}, {}, 200),
    ],
)
@asynchronous
async def test_auth_follows_rasas_rules(
    settings: Config, query: dict[str, str], headers: dict[str, str], status: int
) -> None:
    async with serving(FakeService({"alice": CONVERSATION}), settings) as client:
        response = await client.get(path("alice", "tracker"), params=query, headers=headers)
        assert response.status == status
        if status == 401:
            rasa_error(await response.json(), 401, "NotAuthenticated")
        elif status == 403:
            rasa_error(await response.json(), 403, "NotAuthorized")


@asynchronous
async def test_a_jwt_user_may_post_to_its_own_conversation_only() -> None:
    service = FakeService()
    alice = bearer({"user": {"username": "alice", "role": "user"}})
    async with serving(service, Config(jwt_secret=SecretStr(SECRET))) as client:
        own = await client.post(path("alice", "tracker/events"), json=listen(1.0), headers=alice)
        assert own.status == 200
        other = await client.post(path("bob", "tracker/events"), json=listen(1.0), headers=alice)
        assert other.status == 403
        story = await client.get(path("bob", "story"), headers=alice)
        assert story.status == 403  # auth comes before the 404
        listing = await client.get("/conversations", headers=alice)
        assert listing.status == 403
        admin = bearer({"user": {"username": "root", "role": "admin"}})
        assert (await client.get("/conversations", headers=admin)).status == 200
    assert [cid for _, cid, _ in service.calls] == ["alice"]


@asynchronous
async def test_short_hmac_keys_work_without_warnings_per_request() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        headers = bearer({"user": {"role": "admin"}}, key="short")
    async with serving(FakeService(), Config(jwt_secret=SecretStr("short"))) as client:
        response = await client.get(path("c1", "tracker"), headers=headers)
        assert response.status == 200


@asynchronous
async def test_jwt_method_is_used() -> None:
    settings = Config(jwt_secret=SecretStr(SECRET + SECRET), jwt_method="HS512")
    admin = {"user": {"role": "admin"}}
    async with serving(FakeService(), settings) as client:
        ok = await client.get(
            path("c1", "tracker"), headers=bearer(admin, SECRET + SECRET, "HS512")
        )
        assert ok.status == 200
        wrong = await client.get(
            path("c1", "tracker"), headers=bearer(admin, SECRET + SECRET, "HS256")
        )
        assert wrong.status == 401


@pytest.mark.parametrize("method", ["none", "XS999"])
def test_unusable_jwt_methods_fail_at_startup(method: str) -> None:
    with pytest.raises(ValueError, match="jwt_method"):
        create_app(FakeService(), Config(jwt_secret=SecretStr(SECRET), jwt_method=method))


@asynchronous
async def test_the_real_settings_object_fits() -> None:
    from streams.settings import load_settings

    settings = load_settings(auth_token=TOKEN, max_body_bytes=1000)
    async with serving(FakeService(), settings) as client:
        assert (await client.get(path("c1", "tracker"), params={"token": TOKEN})).status == 200
        assert (await client.get(path("c1", "tracker"))).status == 401


# -- service errors ------------------------------------------------------------------------------


@asynchronous
async def test_an_unavailable_conversation_is_503_saying_whether_events_were_published() -> None:
    service = FakeService()
    service.failure = ConversationUnavailable("not folded within 5 s", published=True)
    async with serving(service) as client:
        response = await client.post(path("c1", "tracker/events"), json=listen(1.0))
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        error = await response.json()
        rasa_error(error, 503, "ServiceUnavailable")
        assert error["details"] == {"published": True}
        assert error["message"] == "not folded within 5 s"


@asynchronous
async def test_an_unexpected_failure_is_a_500_conversation_error() -> None:
    service = FakeService()
    service.failure = RuntimeError("disk on fire")
    async with serving(service) as client:
        response = await client.put(path("c1", "tracker/events"), json=[])
        assert response.status == 500
        error = await response.json()
        rasa_error(error, 500, "ConversationError")
        assert "disk on fire" in error["message"]


# -- routing between two workers -----------------------------------------------------------------


@asynccontextmanager
async def two_workers(
    settings: Config | None = None, **options: Any
) -> AsyncIterator[tuple[Client, FakeService, Client, FakeService]]:
    """Workers A and B on loopback; ``b/...`` conversations belong to B."""
    service_a, service_b = FakeService(), FakeService({"b/known": CONVERSATION})
    async with (
        serving(service_a, settings, **options) as a,
        serving(service_b, settings, **options) as b,
    ):
        url_b = base_url(b)
        for cid in ("b/known", "b/new", "b/ünï code"):
            service_a.owners[cid] = url_b
        yield a, service_a, b, service_b


@asynchronous
async def test_requests_for_another_workers_conversation_are_forwarded() -> None:
    async with two_workers() as (a, service_a, b, service_b):
        tracker = await a.get(path("b/known", "tracker"), params={"include_events": "APPLIED"})
        assert tracker.status == 200
        assert tracker.headers[ROUTED_TO] == base_url(b)
        assert await tracker.json() == state(
            reference("b/known", CONVERSATION), EventVerbosity.APPLIED
        )

        posted = await a.post(path("b/new", "tracker/events"), json=CONVERSATION[:3])
        assert posted.status == 200
        assert await posted.json() == state(
            reference("b/new", CONVERSATION[:3]), EventVerbosity.AFTER_RESTART
        )
        assert "b/new" in service_b.trackers
        assert service_a.trackers == {}

        put = await a.put(path("b/ünï code", "tracker/events"), json=CONVERSATION[:1])
        assert put.status == 200
        assert (await put.json())["sender_id"] == "b/ünï code"
        assert len(service_b.trackers["b/ünï code"].events) == 1

        story = await a.get(path("b/known", "story"))
        assert story.content_type == "text/yaml"
        assert await story.text() == await (await b.get(path("b/known", "story"))).text()

        error = await a.get(path("b/known", "tracker"), params={"include_events": "bad"})
        assert error.status == 400  # the owner's error, relayed
        assert error.headers[ROUTED_TO] == base_url(b)

        local = await a.get(path("a-own", "tracker"))
        assert ROUTED_TO not in local.headers


@asynchronous
async def test_forwarding_keeps_the_credentials() -> None:
    settings = Config(auth_token=SecretStr(TOKEN), jwt_secret=SecretStr(SECRET))
    async with two_workers(settings) as (a, _, _b, service_b):
        user = bearer({"user": {"username": "b/new", "role": "user"}})
        by_jwt = await a.post(path("b/new", "tracker/events"), json=listen(1.0), headers=user)
        assert by_jwt.status == 200
        by_token = await a.post(
            path("b/new", "tracker/events"), json=listen(2.0), params={"token": TOKEN}
        )
        assert by_token.status == 200
        assert len(service_b.trackers["b/new"].events) == 2
        refused = await a.get(path("b/new", "tracker"))
        assert refused.status == 401
        assert ROUTED_TO not in refused.headers  # refused by A, before routing


@asynchronous
async def test_a_request_is_forwarded_once_at_most() -> None:
    async with two_workers() as (a, _, b, service_b):
        service_b.owners["b/known"] = base_url(a)  # B thinks A owns it: a rebalance
        response = await a.get(path("b/known", "tracker"))
        assert response.status == 503
        assert response.headers[ROUTED_TO] == base_url(b)
        error = await response.json()
        rasa_error(error, 503, "RoutingLoop")
        assert error["details"] == {"routed_from": base_url(a), "owner": base_url(a)}

        direct = await a.get(path("b/known", "tracker"), headers={ROUTED_FROM: "http://x:1"})
        assert direct.status == 503
        assert ROUTED_TO not in direct.headers

        # a routed request for a conversation the worker owns is served
        served = await b.get(path("b/other", "tracker"), headers={ROUTED_FROM: base_url(a)})
        assert served.status == 200


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@asynchronous
async def test_an_unreachable_owner_is_502() -> None:
    service = FakeService()
    service.owners["elsewhere"] = f"http://127.0.0.1:{closed_port()}"
    async with serving(service) as client:
        response = await client.get(path("elsewhere", "tracker"))
        assert response.status == 502
        rasa_error(await response.json(), 502, "BadGateway")


@asynchronous
async def test_an_owner_that_does_not_answer_in_time_is_504() -> None:
    async with two_workers(forward_timeout=0.2) as (a, _, _b, service_b):
        service_b.delay = 5.0  # B is still working when A gives up after 0.2 s
        response = await a.post(path("b/new", "tracker/events"), json=listen(1.0))
        assert response.status == 504
        rasa_error(await response.json(), 504, "GatewayTimeout")
