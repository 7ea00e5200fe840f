"""The worker's state stores: per state partition, the conversations' heads and their history.

Rules of this module:

* A partition's state is two stores, ``heads`` and ``history`` (the tables of
  ``streams.topics.TABLES``). A store is a mapping that ``processors.stream.StreamFolder`` reads
  and writes like a dict, and it remembers what changed since the last ``drain``: the records
  the worker writes to the table's changelog in the partition's next transaction (a deleted key
  gives a tombstone, value None).
* ``memory`` (:class:`MemoryState`): everything in dicts, rebuilt from the beginning of the
  changelogs whenever a worker takes the partition. For tests and small deployments.
* ``rocksdb`` (:class:`RocksState`): one RocksDB database per state partition, holding the
  committed state and a checkpoint: the changelog offset each table reflects, the partition's
  read positions, and when it was written.

  - A drained change reaches the database only after its transaction commits (``persist``), in
    one atomic write batch with the new checkpoint. The database never holds what Kafka does not
    (a crash between the commit and ``persist`` leaves it behind, never ahead).
  - Taking a partition reads the changelogs from the checkpoint on (what other workers or a
    crash added since), not from their beginning.
  - A checkpoint Kafka cannot continue is dropped with the database's contents, and the
    partition is restored from the beginning of its changelogs: an offset below a changelog's
    first offset or past its end (the topic was truncated or re-created), or a checkpoint older
    than ``MAX_CHECKPOINT_AGE_S`` with changelog records after it (compaction may have removed
    tombstones among them).
  - Decoded heads of the conversations in use are cached, least recently used first out;
    history records are read from the database when a tracker is rebuilt (the folder caches
    trackers).
  - One worker process per state directory: :func:`lock_state_dir` holds it (``fcntl`` lock),
    and a second worker pointed at it fails with a message saying so.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import IO, Any, Final, Protocol

import orjson
from rocksdict import Options, Rdict, WriteBatch

from events import TrackerflowError
from processors.stream import encode_head

log = logging.getLogger("trackerflow.stores")

# a store's drained changes: each key (the changelog record's key, written as its UTF-8) and its
# encoded value (None: deleted, a tombstone)
Records = list[tuple[str, bytes | None]]
Offsets = dict[str, int]  # table -> changelog offset
Positions = dict[str, int]  # source topic -> next offset to read

# Kafka's default ``delete.retention.ms`` (the changelogs are created with it, see
# ``streams.topics.changelog_config``) is one day: a tombstone is kept at least that long after
# compaction reaches it. A checkpoint younger than that cannot have missed one.
MAX_CHECKPOINT_AGE_S: Final = 12 * 3600.0
HEADS_CACHE: Final = 10_000  # decoded heads kept per partition
RESTORE_BATCH: Final = 10_000  # changelog records per database write while restoring
_CHECKPOINT: Final = b"\x00checkpoint"  # sorts before every table's keys
_PREFIXES: Final = {"heads": b"h", "history": b"e"}  # each table's keys in the database
_MISSING: Final[Any] = object()


class StateError(TrackerflowError, RuntimeError):
    """A state directory cannot be used (locked by another worker, unreadable database)."""


class Store(MutableMapping[str, Any]):
    """The interface both kinds of store offer beyond a mapping."""

    encode: Callable[[Any], bytes]  # how a value is written to the changelog (and database)

    def drain(self) -> Records:  # pragma: no cover - interface
        raise NotImplementedError

    def scan(self, marker: bytes | None = None) -> Iterator[tuple[str, Any]]:
        """Every (key, value), leaving the store's cache alone; with ``marker``, the store may
        skip values whose encoding does not contain it (a cheap filter, not an exact one)."""
        raise NotImplementedError  # pragma: no cover - interface

    def update(self, other: Any = (), /, **more: Any) -> None:
        """Set many at once: a dict in one step (the folder's new history records), anything
        else as ``MutableMapping`` does."""
        if type(other) is dict and not more:
            self._set_all(other)
        else:
            super().update(other, **more)

    def _set_all(self, items: dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class ChangeStore(Store):
    """A dict that remembers what changed since the last ``drain``."""

    def __init__(self, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]) -> None:
        self.data: dict[str, Any] = {}
        self.changed: dict[str, Any] = {}
        self.encode, self.decode = encode, decode

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.changed[key] = value

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.changed[key] = None

    def _set_all(self, items: dict[str, Any]) -> None:
        self.data.update(items)
        self.changed.update(items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def scan(self, marker: bytes | None = None) -> Iterator[tuple[str, Any]]:
        return iter(list(self.data.items()))

    def drain(self) -> Records:
        """The changelog records of what changed (the last value per key, None for a deleted
        one), and forget them."""
        changed, self.changed = self.changed, {}
        encode = self.encode
        if encode is bytes:  # the values are their changelog bytes (history): as they are
            return list(changed.items())
        return [(key, None if value is None else encode(value)) for key, value in changed.items()]

    def load(self, key: bytes, value: bytes | None) -> None:
        """Restore one changelog record (not a change); None is a tombstone (its key's earlier
        value may not be compacted away yet)."""
        if value is None:
            self.data.pop(key.decode(), None)
        else:
            self.data[key.decode()] = self.decode(value)


class PartitionState(Protocol):
    """What the worker needs of one state partition, whatever keeps it."""

    @property
    def heads(self) -> Store:
        """Conversation id -> head."""

    @property
    def history(self) -> Store:
        """``processors.stream.history_key`` -> one encoded event."""

    def resume_from(self, firsts: Offsets, ends: Offsets) -> tuple[Offsets, Positions]:
        """Where to start reading each table's changelog, given its first and end offsets, and
        the read positions known at that point."""

    def load(self, table: str, key: bytes, value: bytes | None) -> None:
        """Restore one changelog record of ``table``."""

    def restored(self, ends: Offsets, positions: Positions) -> None:
        """The changelogs were read up to ``ends``; ``positions`` are the read positions."""

    def persist(self, ends: Offsets, positions: Positions) -> None:
        """The changes drained last are committed up to changelog offsets ``ends``."""

    def close(self) -> None:
        """Release the state (the partition is given up)."""


def head_encoder(room: int | None) -> Callable[[Any], bytes]:
    """How a heads store encodes a head: ``encode_head`` within ``room`` bytes (None: any)."""
    if room is None:
        return orjson.dumps
    return functools.partial(encode_head, room=room)


class MemoryState:
    """A partition's state in memory, restored from the changelogs' beginning."""

    def __init__(self, *, head_room: int | None = None) -> None:
        self.heads = ChangeStore(head_encoder(head_room), orjson.loads)
        self.history = ChangeStore(bytes, bytes)
        self._tables = {"heads": self.heads, "history": self.history}

    def resume_from(self, firsts: Offsets, ends: Offsets) -> tuple[Offsets, Positions]:
        return dict(firsts), {}

    def load(self, table: str, key: bytes, value: bytes | None) -> None:
        self._tables[table].load(key, value)

    def restored(self, ends: Offsets, positions: Positions) -> None:
        pass  # nothing to write down: memory is gone with the process

    def persist(self, ends: Offsets, positions: Positions) -> None:
        pass  # the dicts already hold the changes

    def close(self) -> None:
        pass


class RocksStore(Store):
    """One table in a partition's RocksDB database (keys under the table's prefix byte), with
    the changes not yet committed in memory on top."""

    def __init__(
        self,
        db: Rdict,
        prefix: bytes,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
        cache_size: int,
    ) -> None:
        self.db, self.prefix = db, prefix
        self.encode, self.decode = encode, decode
        self.cache_size = cache_size
        self.cache: OrderedDict[str, Any] = OrderedDict()  # committed values, decoded
        self.changed: dict[str, Any] = {}  # since the last drain; None = deleted
        self.unpersisted: dict[str, tuple[Any, bytes | None]] = {}  # drained, not committed

    def get(self, key: str, default: Any = None) -> Any:
        value = self.changed.get(key, _MISSING)
        if value is _MISSING:
            drained = self.unpersisted.get(key)
            if drained is not None:
                value = drained[0]
            else:
                value = self.cache.get(key, _MISSING)
                if value is not _MISSING:
                    self.cache.move_to_end(key)
                    return value
                raw = self.db.get(self.prefix + key.encode())
                if raw is None:
                    return default
                value = self.decode(raw)
                self._remember(key, value)
                return value
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.changed[key] = value

    def _set_all(self, items: dict[str, Any]) -> None:
        self.changed.update(items)

    def __delitem__(self, key: str) -> None:
        if self.get(key, _MISSING) is _MISSING:
            raise KeyError(key)
        self.changed[key] = None

    def __iter__(self) -> Iterator[str]:
        overlay = self._overlay()
        prefix = self.prefix
        raw: bytes
        for raw in self.db.keys(from_key=prefix):  # type: ignore[assignment]
            if not raw.startswith(prefix):
                break
            key = raw[1:].decode()
            if key not in overlay:
                yield key
        yield from (key for key, value in overlay.items() if value is not None)

    def scan(self, marker: bytes | None = None) -> Iterator[tuple[str, Any]]:
        overlay = self._overlay()
        prefix, decode = self.prefix, self.decode
        raw: bytes
        value: bytes
        for raw, value in self.db.items(from_key=prefix):  # type: ignore[assignment]
            if not raw.startswith(prefix):
                break
            key = raw[1:].decode()
            if key not in overlay and (marker is None or marker in value):
                yield key, decode(value)
        yield from ((key, value) for key, value in overlay.items() if value is not None)

    def _overlay(self) -> dict[str, Any]:
        """The values not in the database yet (None: deleted)."""
        overlay = {key: value for key, (value, _) in self.unpersisted.items()}
        overlay.update(self.changed)
        return overlay

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def drain(self) -> Records:
        changed, self.changed = self.changed, {}
        records: Records = []
        encode, unpersisted = self.encode, self.unpersisted
        for key, value in changed.items():
            encoded = None if value is None else encode(value)
            unpersisted[key] = (value, encoded)
            records.append((key, encoded))
        return records

    def write_drained(self, batch: WriteBatch) -> None:
        """Put the drained changes in ``batch`` (their transaction committed)."""
        prefix = self.prefix
        for key, (value, encoded) in self.unpersisted.items():
            if encoded is None:
                batch.delete(prefix + key.encode())
                self.cache.pop(key, None)
            else:
                batch.put(prefix + key.encode(), encoded)
                self._remember(key, value)
        self.unpersisted = {}

    def _remember(self, key: str, value: Any) -> None:
        if self.cache_size:
            cache = self.cache
            cache[key] = value
            cache.move_to_end(key)
            if len(cache) > self.cache_size:
                cache.popitem(last=False)


class RocksState:
    """A partition's state in a RocksDB database at ``path`` (created if missing)."""

    def __init__(
        self,
        path: Path,
        *,
        heads_cache: int = HEADS_CACHE,
        max_age_s: float = MAX_CHECKPOINT_AGE_S,
        clock: Callable[[], float] = time.time,
        head_room: int | None = None,
    ) -> None:
        self.path = path
        self.max_age_s = max_age_s
        self.clock = clock
        self.db = open_database(path)
        heads, history = _PREFIXES["heads"], _PREFIXES["history"]
        self.heads = RocksStore(self.db, heads, head_encoder(head_room), orjson.loads, heads_cache)
        self.history = RocksStore(self.db, history, bytes, bytes, 0)
        self._offsets: Offsets = {}
        self._batch = WriteBatch(raw_mode=True)
        self._loaded = 0
        self.wiped: str | None = None  # why the last resume_from dropped the database's contents

    def checkpoint(self) -> dict[str, Any] | None:
        raw = self.db.get(_CHECKPOINT)
        return None if raw is None else orjson.loads(raw)

    def resume_from(self, firsts: Offsets, ends: Offsets) -> tuple[Offsets, Positions]:
        checkpoint = self.checkpoint()
        why = None if checkpoint is None else self._unusable(checkpoint, firsts, ends)
        if checkpoint is not None and why is None:
            self._offsets = dict(checkpoint["offsets"])
            return dict(self._offsets), dict(checkpoint["positions"])
        if why is not None:
            log.warning("state %s: %s; restoring it from the changelogs' beginning", self.path, why)
        # no checkpoint: a new database, or one whose first restore never finished
        self.db.delete_range(b"\x00", b"\xff")
        self.heads.cache.clear()
        self.history.cache.clear()
        self.wiped = why
        self._offsets = dict(firsts)
        return dict(firsts), {}

    def _unusable(self, checkpoint: dict[str, Any], firsts: Offsets, ends: Offsets) -> str | None:
        """Why Kafka cannot continue ``checkpoint`` (None: it can)."""
        offsets = checkpoint["offsets"]
        for table, first in firsts.items():
            offset = offsets.get(table)
            if offset is None or not first <= offset <= ends[table]:
                return (
                    f"its checkpoint has {table} changelog offset {offset}, outside the "
                    f"changelog's offsets {first}..{ends[table]} (truncated or re-created?)"
                )
        age = self.clock() - float(checkpoint["written_at"])
        behind = any(offsets[table] < end for table, end in ends.items())
        if age > self.max_age_s and behind:  # up to date, it cannot have missed anything
            return (
                f"its checkpoint is {age / 3600:.1f} h old (more than "
                f"{self.max_age_s / 3600:.1f} h: compaction may have removed deletions since)"
            )
        return None

    def load(self, table: str, key: bytes, value: bytes | None) -> None:
        full = _PREFIXES[table] + key
        if value is None:
            self._batch.delete(full)
        else:
            self._batch.put(full, value)
        self._loaded += 1
        if self._loaded >= RESTORE_BATCH:
            self._write()

    def restored(self, ends: Offsets, positions: Positions) -> None:
        self._offsets.update(ends)
        self._write(positions)

    def persist(self, ends: Offsets, positions: Positions) -> None:
        self.heads.write_drained(self._batch)
        self.history.write_drained(self._batch)
        self._offsets.update(ends)
        self._write(positions)

    def _write(self, positions: Positions | None = None) -> None:
        batch = self._batch
        if positions is not None:
            checkpoint = {
                "offsets": self._offsets,
                "positions": positions,
                "written_at": self.clock(),
            }
            batch.put(_CHECKPOINT, orjson.dumps(checkpoint))
        if not batch.is_empty():
            self.db.write(batch)
            self._batch = WriteBatch(raw_mode=True)
        self._loaded = 0

    def close(self) -> None:
        self.db.close()


def open_database(path: Path) -> Rdict:
    """The RocksDB database at ``path`` (created if missing), keys and values as bytes."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(16 << 20)  # per partition; RocksDB's default is 64 MiB
    try:
        path.mkdir(parents=True, exist_ok=True)
        return Rdict(str(path), options)
    except Exception as error:  # rocksdict raises plain Exception for RocksDB errors
        raise StateError(
            f"cannot open the state database {path}: {error}; expected a RocksDB directory "
            "that this worker alone uses"
        ) from None


def lock_state_dir(directory: Path) -> IO[bytes]:
    """Hold ``directory`` (created if missing) for this process until the returned file is
    closed (or the process ends); another worker already holding it is a ``StateError``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = (directory / "LOCK").open("ab")
    except OSError as error:
        raise StateError(f"cannot use the state directory {directory}: {error}") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StateError(
            f"the state directory {directory} is in use by another worker; give each worker "
            "its own --state-dir (TRACKERFLOW_STATE_DIR)"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    return handle
