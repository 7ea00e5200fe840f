"""The worker's state stores: the memory store, and the RocksDB store against it (a real
RocksDB in a temporary directory; Kafka's part is played by the offsets handed in)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.stream import StreamFolder
from streams.stores import (
    MAX_CHECKPOINT_AGE_S,
    ChangeStore,
    MemoryState,
    RocksState,
    StateError,
    lock_state_dir,
    open_database,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def written(drained: list[tuple[str, bytes | None]]) -> list[tuple[bytes, bytes | None]]:
    """Drained changes as changelog records: the keys as their UTF-8 (the writer's encoding)."""
    return [(key.encode(), value) for key, value in drained]


@pytest.fixture
def rocks(tmp_path: Path) -> Iterator[RocksState]:
    state = RocksState(tmp_path / "p0", clock=Clock())
    yield state
    state.close()


def test_a_change_store_drains_the_last_value_of_each_changed_key_once() -> None:
    store = ChangeStore(orjson.dumps, orjson.loads)
    store["a"] = {"n": 1}
    store["b"] = {"n": 2}
    store["a"] = {"n": 3}
    assert sorted(store.drain()) == [("a", b'{"n":3}'), ("b", b'{"n":2}')]
    assert store.drain() == []
    assert dict(store) == {"a": {"n": 3}, "b": {"n": 2}} and len(store) == 2
    store.load(b"c", b'{"n":4}')  # restored from the changelog: not a change
    assert store.get("c") == {"n": 4} and store.drain() == []
    store.load(b"c", None)  # a tombstone not yet compacted away
    assert "c" not in store
    del store["a"]  # a deletion's changelog record is a tombstone
    assert store.drain() == [("a", None)] and "a" not in store
    del store["b"]
    store["b"] = {"n": 5}  # set again in the same batch: the value, not the tombstone
    assert store.drain() == [("b", b'{"n":5}')]


def test_the_memory_state_restores_from_the_beginning_and_keeps_nothing() -> None:
    state = MemoryState()
    assert state.resume_from({"heads": 3, "history": 0}, {"heads": 9, "history": 4}) == (
        {"heads": 3, "history": 0},
        {},
    )
    state.load("heads", b"c1", b'{"count":1}')
    state.load("history", b"c1\x1f0", b"{}")
    state.restored({"heads": 9, "history": 4}, {"t.events": 2})
    state.persist({"heads": 10}, {"t.events": 3})
    state.close()
    assert dict(state.heads) == {"c1": {"count": 1}} and dict(state.history) == {"c1\x1f0": b"{}"}


def test_rocks_changes_reach_the_database_only_when_persisted(tmp_path: Path) -> None:
    clock = Clock()
    state = RocksState(tmp_path / "p0", clock=clock)
    assert state.resume_from({"heads": 0, "history": 0}, {"heads": 0, "history": 0}) == (
        {"heads": 0, "history": 0},
        {},
    )
    state.restored({"heads": 0, "history": 0}, {})
    state.heads["c1"] = {"count": 1}
    state.history["c1\x1f0"] = b'{"event":"pause"}'
    assert state.heads["c1"] == {"count": 1} and "c1" in state.heads
    assert state.heads.drain() == [("c1", b'{"count":1}')]
    assert state.history.drain() == [("c1\x1f0", b'{"event":"pause"}')]
    assert state.heads.get("c1") == {"count": 1}  # drained, in its transaction: still seen
    state.close()

    # the transaction never committed: the database does not have it
    state = RocksState(tmp_path / "p0", clock=clock)
    assert state.resume_from({"heads": 0, "history": 0}, {"heads": 0, "history": 0})[0] == {
        "heads": 0,
        "history": 0,
    }
    assert "c1" not in state.heads and len(state.history) == 0
    state.heads["c1"] = {"count": 1}
    state.history["c1\x1f0"] = b'{"event":"pause"}'
    state.heads.drain()
    state.history.drain()
    state.persist({"heads": 2, "history": 2}, {"t.events": 1})
    state.close()

    state = RocksState(tmp_path / "p0", clock=clock)
    assert state.resume_from({"heads": 0, "history": 0}, {"heads": 2, "history": 2}) == (
        {"heads": 2, "history": 2},
        {"t.events": 1},
    )
    assert dict(state.heads) == {"c1": {"count": 1}}
    assert state.history["c1\x1f0"] == b'{"event":"pause"}'
    state.close()


def test_rocks_reads_the_changelog_tail_into_the_database(rocks: RocksState) -> None:
    rocks.resume_from({"heads": 0, "history": 0}, {"heads": 5, "history": 5})
    rocks.load("heads", b"a", b'{"n":1}')
    rocks.load("heads", b"b", b'{"n":2}')
    rocks.load("heads", b"a", None)  # a tombstone
    rocks.load("history", b"b\x1f0", b"{}")
    rocks.restored({"heads": 5, "history": 5}, {"t.events": 7})
    assert dict(rocks.heads) == {"b": {"n": 2}} and list(rocks.history) == ["b\x1f0"]
    assert rocks.checkpoint() == {
        "offsets": {"heads": 5, "history": 5},
        "positions": {"t.events": 7},
        "written_at": Clock().now,
    }


@pytest.mark.parametrize("kind", ["memory", "rocksdb"])
def test_many_values_set_at_once_are_changes_like_values_set_one_by_one(
    kind: str, tmp_path: Path
) -> None:
    state = MemoryState() if kind == "memory" else RocksState(tmp_path / "p0", clock=Clock())
    state.resume_from({"heads": 0, "history": 0}, {"heads": 0, "history": 0})
    history = state.history
    history["a"] = b"1"
    history.update({"b": b"2", "a": b"3"})  # a dict: in one step
    history.update([("c", b"4")], d=b"5")  # anything else: as MutableMapping does
    assert [history[k] for k in "abcd"] == [b"3", b"2", b"4", b"5"]
    assert sorted(history.drain()) == [("a", b"3"), ("b", b"2"), ("c", b"4"), ("d", b"5")]
    assert history.drain() == []
    state.close()


def test_rocks_iterates_committed_and_pending_keys_and_deletes(rocks: RocksState) -> None:
    rocks.resume_from({"heads": 0, "history": 0}, {"heads": 0, "history": 0})
    heads = rocks.heads
    heads["a"], heads["b"], heads["c"] = {"n": 1}, {"n": 2}, {"n": 3}
    heads.drain()
    rocks.persist({"heads": 3}, {})
    del heads["a"]  # pending deletion
    heads["d"] = {"n": 4}  # pending addition
    assert sorted(heads) == ["b", "c", "d"] and len(heads) == 3
    assert heads.drain() == [("a", None), ("d", b'{"n":4}')]
    assert sorted(heads) == ["b", "c", "d"]  # drained, not persisted: still the view
    with pytest.raises(KeyError):
        del heads["a"]
    with pytest.raises(KeyError):
        heads["a"]
    assert heads.pop("zz", None) is None
    rocks.persist({"heads": 6}, {})
    assert sorted(heads) == ["b", "c", "d"] and rocks.db.get(b"ha") is None
    assert rocks.checkpoint()["offsets"] == {"heads": 6, "history": 0}  # type: ignore[index]


def test_rocks_heads_cache_is_bounded_and_reads_through(tmp_path: Path) -> None:
    state = RocksState(tmp_path / "p0", heads_cache=2, clock=Clock())
    state.resume_from({"heads": 0, "history": 0}, {"heads": 0, "history": 0})
    for name in "abcd":
        state.heads[name] = {"name": name}
    state.heads.drain()
    state.persist({"heads": 4}, {})
    assert list(state.heads.cache) == ["c", "d"]
    assert state.heads["a"] == {"name": "a"}  # from the database, then cached
    assert list(state.heads.cache) == ["d", "a"]
    assert state.heads["d"] == {"name": "d"}
    assert list(state.heads.cache) == ["a", "d"]
    state.close()


@pytest.mark.parametrize(
    ("checkpoint", "firsts", "ends", "age", "why"),
    [
        ({"heads": 4, "history": 4}, {"heads": 0, "history": 0}, (9, 9), 0.0, None),
        ({"heads": 4, "history": 4}, {"heads": 0, "history": 5}, (9, 9), 0.0, "outside"),
        ({"heads": 4, "history": 4}, {"heads": 0, "history": 0}, (3, 9), 0.0, "outside"),
        ({"heads": 4}, {"heads": 0, "history": 0}, (9, 9), 0.0, "outside"),
        ({"heads": 4, "history": 4}, {"heads": 0, "history": 0}, (9, 9), 1.0, "old"),
        ({"heads": 4, "history": 4}, {"heads": 0, "history": 0}, (4, 4), 1.0, None),
    ],
    ids=["continues", "below-first", "past-end", "table-missing", "too-old", "old-up-to-date"],
)
def test_rocks_drops_a_checkpoint_kafka_cannot_continue(
    tmp_path: Path,
    checkpoint: dict[str, int],
    firsts: dict[str, int],
    ends: tuple[int, int],
    age: float,
    why: str | None,
) -> None:
    clock = Clock()
    state = RocksState(tmp_path / "p0", clock=clock)
    state.resume_from(dict.fromkeys(checkpoint, 0), dict.fromkeys(checkpoint, 0))
    state.heads["kept?"] = {"n": 1}
    state.heads.drain()
    state.persist(checkpoint, {"t.events": 3})
    state.close()
    clock.now += age * MAX_CHECKPOINT_AGE_S + 1
    state = RocksState(tmp_path / "p0", clock=clock)
    starts, positions = state.resume_from(firsts, {"heads": ends[0], "history": ends[1]})
    if why is None:
        assert starts == checkpoint and positions == {"t.events": 3} and state.wiped is None
        assert "kept?" in state.heads
    else:
        assert starts == firsts and positions == {}
        assert state.wiped is not None and why in state.wiped
        assert list(state.heads) == [] and state.checkpoint() is None
    state.close()


def test_a_state_directory_holds_one_worker(tmp_path: Path) -> None:
    held = lock_state_dir(tmp_path / "state")
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from streams.stores import lock_state_dir; "
            "lock_state_dir(Path(sys.argv[1]))",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert other.returncode != 0
    assert "in use by another worker" in other.stderr and "--state-dir" in other.stderr
    held.close()
    lock_state_dir(tmp_path / "state").close()  # free again


def test_an_unusable_database_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StateError, match="cannot open the state database"):
        open_database(tmp_path / "file")
    with pytest.raises(StateError, match="cannot use the state directory"):
        lock_state_dir(tmp_path / "file" / "below")
    database = open_database(tmp_path / "db")
    with pytest.raises(StateError, match="this worker alone uses"):
        open_database(tmp_path / "db")  # RocksDB's own lock, within one process too
    database.close()


# -- the RocksDB state behaves like the memory state -------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.integers(0, 9)),
        st.tuples(st.just("del"), KEYS, st.none()),
        st.tuples(st.just("commit"), st.none(), st.none()),
        st.tuples(st.just("crash"), st.none(), st.none()),
        st.tuples(st.just("abort"), st.none(), st.none()),
        st.tuples(st.just("commit-crash"), st.none(), st.none()),
    ),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(OPS)
def test_rocks_state_after_commits_and_crashes_equals_the_committed_changelog(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, Any, Any]]
) -> None:
    """Changes are drained into "transactions"; a crash loses the uncommitted ones. Reopening
    the database and reading the changelog from its checkpoint gives the committed state (what
    a memory state restored from the whole changelog has)."""
    path = tmp_path_factory.mktemp("rocks") / "p0"
    clock = Clock()
    changelog: list[tuple[bytes, bytes | None]] = []  # the committed heads changelog
    rocks = RocksState(path, clock=clock)
    rocks.restored({"heads": 0, "history": 0}, {})
    for op, key, value in ops:
        if op == "set":
            rocks.heads[key] = {"v": value}
        elif op == "del" and key in rocks.heads:
            del rocks.heads[key]
        elif op == "commit":
            changelog += written(rocks.heads.drain())
            rocks.persist({"heads": len(changelog)}, {})
        else:  # a crash: uncommitted changes are lost
            drained = written(rocks.heads.drain())
            if op == "abort":  # sent in a transaction that aborted
                pass
            elif op == "commit-crash":  # committed, but the process died before ``persist``
                changelog += drained
            rocks.close()
            rocks = RocksState(path, clock=clock)
            ends = {"heads": len(changelog), "history": 0}
            starts, _ = rocks.resume_from({"heads": 0, "history": 0}, ends)
            for k, v in changelog[starts["heads"] :]:
                rocks.load("heads", k, v)
            rocks.restored(ends, {})
    memory = MemoryState()
    for k, v in changelog:
        memory.load("heads", k, v)
    rocks.close()
    reopened = RocksState(path, clock=clock)
    reopened.resume_from({"heads": 0, "history": 0}, {"heads": len(changelog), "history": 0})
    assert dict(reopened.heads) == dict(memory.heads)
    reopened.close()


def test_a_stream_folder_on_rocks_folds_like_one_on_memory(rocks: RocksState) -> None:
    from processors.stream import Inbound

    rocks.resume_from({"heads": 0, "history": 0}, {"heads": 0, "history": 0})
    memory = MemoryState()
    folders = [StreamFolder(s.heads, s.history, cache_size=1) for s in (memory, rocks)]
    events = [
        (b"c1", b'{"sender_id": "c1", "event": "action", "name": "action_listen"}'),
        (b"c2", b'{"sender_id": "c2", "event": "pause"}'),
        (b"c1", b'{"sender_id": "c1", "event": "slot", "name": "x", "value": 1}'),
        (b"c2", b'{"sender_id": "c2", "event": "resume"}'),
        (b"c1", b'{"sender_id": "c1", "event": "rewind"}'),
    ]
    for offset, (key, value) in enumerate(events):
        for folder in folders:
            folder.process(Inbound("t.events", 0, offset, key, value, 1.0))
            folder.flush()
        memory.heads.drain(), memory.history.drain()
        rocks.heads.drain(), rocks.history.drain()
        rocks.persist({"heads": offset + 1, "history": offset + 1}, {})
    assert dict(rocks.heads) == dict(memory.heads)
    assert dict(rocks.history) == dict(memory.history)
    # trackers rebuilt from the database's history (the folder's cache holds one)
    assert folders[1].tracker("c1").current_state() == folders[0].tracker("c1").current_state()


def test_a_scan_reads_every_entry_past_the_cache_and_filters_by_marker(tmp_path: Path) -> None:
    state = RocksState(tmp_path / "p0", heads_cache=1, clock=Clock())
    state.resume_from({"heads": 0, "history": 0}, {"heads": 0, "history": 0})
    heads = state.heads
    heads["a"], heads["b"] = {"reminders": {"r": 1}}, {"count": 2}
    heads.drain()
    state.persist({"heads": 2}, {})
    heads["c"] = {"count": 3}  # pending
    del heads["b"]  # pending deletion
    assert heads.cache == {"b": {"count": 2}}
    assert sorted(heads.scan()) == [("a", {"reminders": {"r": 1}}), ("c", {"count": 3})]
    assert list(heads.scan(b'"reminders":')) == [
        ("a", {"reminders": {"r": 1}}),
        ("c", {"count": 3}),
    ]
    heads.drain()
    state.persist({"heads": 4}, {})
    assert list(heads.scan(b'"reminders":')) == [("a", {"reminders": {"r": 1}})]
    assert list(heads.cache) == ["c"]  # the scans cached nothing
    state.close()
    memory = MemoryState()
    memory.heads["x"] = {"count": 1}
    assert list(memory.heads.scan(b"anything")) == [("x", {"count": 1})]


def test_a_database_without_checkpoint_starts_empty(tmp_path: Path) -> None:
    """Records of a first restore that never finished (no checkpoint yet) are not kept."""
    state = RocksState(tmp_path / "p0", clock=Clock())
    state.resume_from({"heads": 0, "history": 0}, {"heads": 9, "history": 0})
    state.load("heads", b"half", b"{}")
    state._write()  # the restore's first batch was written; then the process died
    state.close()
    state = RocksState(tmp_path / "p0", clock=Clock())
    assert state.checkpoint() is None and "half" in state.heads
    assert state.resume_from({"heads": 0, "history": 0}, {"heads": 9, "history": 0})[0] == {
        "heads": 0,
        "history": 0,
    }
    assert "half" not in state.heads
    state.close()
