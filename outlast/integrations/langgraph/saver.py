"""``OutlastSaver``: a LangGraph checkpointer on Outlast's bi-tier state store.

A thread is a *record log* in the hot tier (``statestore/logs.py``; id ``lgt-<hash of the thread
id>``, labelled with the thread id): every ``put`` and ``put_writes`` appends one record, so a
commit is one hot insert whatever the thread's length, and a reader that knows records
``0..n-1`` reads only the ones after them.

- A checkpoint record holds only the channels whose version changed (blobs keyed by
  (namespace, channel, version)); a list channel that grew by appending (``add_messages``,
  ``operator.add``) stores only the appended items and names the version it extends.
- A record is zstd-compressed against the raw bytes of the few records before it (a raw-content
  dictionary, named by their positions). A turn's message appears in the task's writes and again
  in the next checkpoint; the second copy costs a few bytes, not its size.
- A channel value larger than an eighth of the hot tier's inline limit goes to the cold tier as an
  immutable blob named by its content (the record keeps the reference); a record that is still
  too large goes cold whole.
- Each record carries its log's generation (random, drawn by the log's first record), so a
  reader whose view predates a ``delete_thread`` and a re-creation starts over instead of mixing
  the two logs.

Values are serialised with LangGraph's own serializer (``JsonPlusSerializer``, msgpack; its
pickle fallback stays off).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import hashlib
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, cast

import msgpack
import zstandard
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from statestore import BlobRef, CorruptStateError, LogRecord, StateStore

__all__ = ["OutlastSaver", "thread_log_id"]

LOG_PREFIX = "lgt-"
_MAGIC = b"LGZ2"  # a record: msgpack {"g": generation, "z": [dictionary positions], "d": zstd}
_DICT_RECORDS = 4  # a record is compressed against the raw bytes of the last few records
_KEEP_RAW = 4 * _DICT_RECORDS  # raw records a thread's view keeps for later dictionaries

Key = tuple[str, str, Any]  # (namespace, channel, version)

# The check ``OutlastSaver.fenced`` installs for the appends made in its context.
_FENCE: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "outlast_langgraph_fence", default=None
)


def thread_log_id(thread_id: str) -> str:
    """The record log that holds a LangGraph thread's checkpoints."""
    return LOG_PREFIX + hashlib.sha256(thread_id.encode()).hexdigest()[:24]


@dataclass
class _Thread:
    """What one process knows of one thread (rebuilt from the log, extended as it grows)."""

    generation: bytes = b""
    seen: int = 0  # records 0..seen-1 are applied
    synced: bool = False  # the log has been read once (an exclusive saver reads it only once)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one append at a time
    # (ns, checkpoint id) -> (checkpoint without values, metadata, parent id)
    checkpoints: dict[tuple[str, str], tuple[list[Any], list[Any], str | None]] = field(
        default_factory=dict
    )
    latest: dict[str, str] = field(default_factory=dict)  # ns -> its newest checkpoint id
    blobs: dict[Key, list[Any]] = field(default_factory=dict)  # stored blob descriptors
    writes: dict[tuple[str, str], dict[tuple[str, int], tuple[str, str, list[Any], str]]] = field(
        default_factory=dict
    )
    raw: dict[int, bytes] = field(default_factory=dict)  # position -> raw record, recent ones
    values: dict[Key, Any] = field(default_factory=dict)  # decoded values, a few recent ones
    # (ns, channel) -> (version, a copy of the list stored at it): the base of the next append
    tails: dict[tuple[str, str], tuple[Any, list[Any]]] = field(default_factory=dict)


class OutlastSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on Outlast's bi-tier state store (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        *,
        serde: SerializerProtocol | None = None,
        inline_limit: int | None = None,
        value_cache: int = 64,
        exclusive: bool = False,
    ) -> None:
        """``exclusive``: only this saver writes the threads it touches (one process, or the one
        leg holding a run's lease). After its first read of a thread it reads from what it knows
        plus its own writes, without asking the store for new records, so reads stop costing a
        round trip. Call ``forget(thread_id)`` when another writer may have run since."""
        super().__init__(serde=serde)
        self.store = store
        self.exclusive = exclusive
        self.inline_limit = (
            inline_limit if inline_limit is not None else max(1024, store.inline_limit // 8)
        )
        self._value_cache = value_cache
        self._threads: dict[str, _Thread] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ the thread's log

    def forget(self, thread_id: str) -> None:
        """Drop what this saver knows of a thread: the next read reads its log again."""
        with self._lock:
            self._threads.pop(str(thread_id), None)

    @staticmethod
    @contextlib.contextmanager
    def fenced(check: Callable[[], None]) -> Iterator[None]:
        """Call ``check`` before every append made in this context (LangGraph carries the
        context into the threads that save checkpoints); it raises when the caller may no
        longer write. ``durable_graph`` fences each superstep by the leg's lease, so a leg that
        lost it (paused past its lease, then woken) appends no checkpoint beside the leg that
        took over."""
        token = _FENCE.set(check)
        try:
            yield
        finally:
            _FENCE.reset(token)

    def _view(self, thread_id: str) -> _Thread:
        with self._lock:
            state = self._threads.get(thread_id)
            if state is None:
                state = self._threads[thread_id] = _Thread()
            return state

    def _sync(self, thread_id: str) -> _Thread | None:
        """Bring this process's view of the thread up to date; None if the thread has no data."""
        state = self._view(thread_id)
        if self.exclusive and state.synced:
            return state if state.seen else None
        with state.lock:
            self._catch_up(thread_id, state)
        return state if state.seen else None

    def _catch_up(self, thread_id: str, state: _Thread) -> None:
        """Apply the records after ``state.seen`` (under ``state.lock``)."""
        log_id = thread_log_id(thread_id)
        # Re-read the last applied record too: if it is gone or of another generation, the log
        # was deleted (and maybe re-created) since, and the view starts over.
        start = max(state.seen - 1, 0)
        records = self.store.hot.read_log(log_id, start)
        frames = {r.position: self._frame(log_id, r) for r in records}
        if state.seen:
            if not records or frames[records[0].position]["g"] != state.generation:
                self._reset(state)
                records = self.store.hot.read_log(log_id, 0)
                frames = {r.position: self._frame(log_id, r) for r in records}
            else:
                records = records[1:]
        for record in records:
            frame = frames[record.position]
            if state.seen == 0:
                state.generation = frame["g"]
            elif frame["g"] != state.generation:
                raise CorruptStateError(
                    f"langgraph thread {thread_id!r}: record {record.position} belongs to another "
                    "generation of the log than the records before it",
                    tier=self.store.hot.scheme,
                    key=f"logs/{log_id}/{record.position}",
                )
            raw = self._raw(log_id, state, record.position, frames)
            self._apply(state, msgpack.unpackb(raw, raw=False, strict_map_key=False))
            state.seen = record.position + 1
        state.synced = True

    @staticmethod
    def _reset(state: _Thread) -> None:
        """Empty the view in place (its lock is held by the caller, so the object stays)."""
        fresh = _Thread()
        for f in fields(_Thread):
            if f.name != "lock":
                setattr(state, f.name, getattr(fresh, f.name))

    def _frame(self, log_id: str, record: LogRecord) -> dict[str, Any]:
        payload = record.payload
        data = self.store.cold.get(log_id, payload) if isinstance(payload, BlobRef) else payload
        if not data.startswith(_MAGIC):
            raise CorruptStateError(
                "not a langgraph checkpoint record",
                tier=self.store.hot.scheme,
                key=f"logs/{log_id}/{record.position}",
            )
        frame: dict[str, Any] = msgpack.unpackb(data[len(_MAGIC) :], raw=False)
        return frame

    def _raw(
        self, log_id: str, state: _Thread, position: int, frames: dict[int, dict[str, Any]]
    ) -> bytes:
        """The raw bytes of record ``position`` (decompressed against its dictionary)."""
        if position in state.raw:
            return state.raw[position]
        frame = frames.get(position)
        if frame is None:  # a dictionary record this view no longer keeps: read it again
            frames.update(
                (r.position, self._frame(log_id, r))
                for r in self.store.hot.read_log(log_id, position, limit=_KEEP_RAW + 1)
            )
            frame = frames.get(position)
            if frame is None:
                raise CorruptStateError(
                    f"langgraph record {position} is missing (a later record names it as its "
                    "dictionary)",
                    tier=self.store.hot.scheme,
                    key=f"logs/{log_id}/{position}",
                )
        prefix = b"".join(self._raw(log_id, state, ref, frames) for ref in frame["z"])
        if prefix:
            dictionary = zstandard.ZstdCompressionDict(
                prefix, dict_type=zstandard.DICT_TYPE_RAWCONTENT
            )
            raw = zstandard.ZstdDecompressor(dict_data=dictionary).decompress(frame["d"])
        else:
            raw = zstandard.ZstdDecompressor().decompress(frame["d"])
        self._remember(state, position, raw)
        return bytes(raw)

    @staticmethod
    def _remember(state: _Thread, position: int, raw: bytes) -> None:
        state.raw[position] = raw
        while len(state.raw) > _KEEP_RAW:
            state.raw.pop(min(state.raw))

    def _append(self, thread_id: str, record: dict[str, Any]) -> None:
        """Append one record, compressed against the last few records of the log."""
        state = self._view(thread_id)
        log_id = thread_log_id(thread_id)
        raw = msgpack.packb(record, use_bin_type=True)
        # One append per thread at a time in this process: LangGraph saves a superstep's writes
        # from background threads, and a record compressed before the one just ahead of it was
        # remembered would miss the copy of its content that record holds.
        with state.lock:
            if not (self.exclusive and state.synced):
                self._catch_up(thread_id, state)
            if not state.generation:
                state.generation = secrets.token_bytes(8)
            refs = [p for p in range(state.seen - _DICT_RECORDS, state.seen) if p in state.raw]
            prefix = b"".join(state.raw[p] for p in refs)
            if len(prefix) >= 8:
                dictionary = zstandard.ZstdCompressionDict(
                    prefix, dict_type=zstandard.DICT_TYPE_RAWCONTENT
                )
                data = zstandard.ZstdCompressor(level=3, dict_data=dictionary).compress(raw)
            else:
                refs = []
                data = zstandard.ZstdCompressor(level=3).compress(raw)
            framed = _MAGIC + msgpack.packb(
                {"g": state.generation, "z": refs, "d": data}, use_bin_type=True
            )
            check = _FENCE.get()
            if check is not None:
                check()
            try:
                payload = self.store.place(log_id, framed)
                position = self.store.hot.append_log(log_id, payload, label=thread_id)
            except BaseException:
                # The append may have landed with its reply lost: read the log before trusting
                # this view again, even in exclusive mode.
                state.synced = False
                raise
            if position == state.seen:
                self._remember(state, position, raw)
                self._apply(state, record)
                state.seen = position + 1
            else:  # another writer got in between: read the log again before trusting the view
                state.synced = False
                if self.exclusive:
                    self._catch_up(thread_id, state)

    # ------------------------------------------------------------------ records

    def _apply(self, state: _Thread, rec: dict[str, Any]) -> None:
        ns = rec["ns"]
        if rec["k"] == "cp":
            state.checkpoints[(ns, rec["id"])] = (rec["cp"], rec["md"], rec["parent"])
            # Checkpoint ids sort by time (LangGraph's uuid6): the newest is the greatest. Kept
            # here so ``get_tuple`` does not scan every checkpoint of a long thread per turn.
            if rec["id"] > state.latest.get(ns, ""):
                state.latest[ns] = rec["id"]
            for channel, version, blob in rec["vals"]:
                state.blobs[(ns, channel, version)] = blob
        elif rec["k"] == "w":
            bucket = state.writes.setdefault((ns, rec["cid"]), {})
            for idx, channel, blob in rec["w"]:
                key = (rec["task"], idx)
                if idx >= 0 and key in bucket:
                    continue
                bucket[key] = (rec["task"], channel, blob, rec["path"])

    def _place(self, thread_id: str, typed: tuple[str, bytes]) -> list[Any]:
        """A blob descriptor: ``["v", type, bytes]`` inline, ``["c", type, ref]`` cold."""
        kind, data = typed
        if len(data) > self.inline_limit:
            ref = self.store.cold.put(thread_log_id(thread_id), data, codec=f"langgraph/{kind}")
            return ["c", kind, ref.model_dump(mode="json")]
        return ["v", kind, data]

    def _unplace(self, thread_id: str, blob: list[Any]) -> Any:
        if blob[0] == "c":
            data = self.store.cold.get(thread_log_id(thread_id), BlobRef(**blob[2]))
            return self.serde.loads_typed((blob[1], data))
        return self.serde.loads_typed((blob[1], blob[2]))

    def _value(self, thread_id: str, state: _Thread, key: Key) -> Any:
        """The value of one channel version, following appends back to a full value."""
        chain: list[list[Any]] = []
        base: Any = None
        k: Key | None = key
        while k is not None:
            if k in state.values:
                base = state.values[k]
                break
            blob = state.blobs[k]
            if blob[0] == "d":  # ["d", base version, suffix blob]
                chain.append(blob)
                k = (k[0], k[1], blob[1])
            else:
                base = self._unplace(thread_id, blob)
                k = None
        if chain:
            items = list(base)
            for blob in reversed(chain):
                items.extend(self._unplace(thread_id, blob[2]))
            base = items
        state.values[key] = base
        while len(state.values) > self._value_cache:
            state.values.pop(next(iter(state.values)))
        return list(base) if isinstance(base, list) else base

    def _tuple(
        self, thread_id: str, state: _Thread, ns: str, checkpoint_id: str
    ) -> CheckpointTuple:
        cp, md, parent = state.checkpoints[(ns, checkpoint_id)]
        checkpoint = cast(Checkpoint, self.serde.loads_typed((cp[0], cp[1])))
        values: dict[str, Any] = {}
        for channel, version in checkpoint["channel_versions"].items():
            key = (ns, channel, version)
            blob = state.blobs.get(key)
            if blob is None or blob[0] == "e":
                continue
            value = self._value(thread_id, state, key)
            values[channel] = value
            if isinstance(value, list):
                with self._lock:
                    state.tails[(ns, channel)] = (version, list(value))
        checkpoint = {**checkpoint, "channel_values": values}
        ordered = sorted(
            (
                (task, channel, blob, path, idx)
                for (task, idx), (_, channel, blob, path) in state.writes.get(
                    (ns, checkpoint_id), {}
                ).items()
            ),
            key=lambda w: (w[3], w[0], w[4]),
        )
        pending: list[PendingWrite] = [
            (task, channel, self._unplace(thread_id, blob)) for task, channel, blob, _, _ in ordered
        ]
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": checkpoint_id,
                }
            },
            checkpoint=checkpoint,
            metadata=cast(CheckpointMetadata, self.serde.loads_typed((md[0], md[1]))),
            parent_config=(
                {
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": ns,
                        "checkpoint_id": parent,
                    }
                }
                if parent
                else None
            ),
            pending_writes=pending,
        )

    # ------------------------------------------------------------------ the saver

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        state = self._sync(thread_id)
        if state is None:
            return None
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id is None:
            checkpoint_id = state.latest.get(ns)
            if checkpoint_id is None:
                return None
        elif (ns, checkpoint_id) not in state.checkpoints:
            return None
        return self._tuple(thread_id, state, ns, checkpoint_id)

    def _thread_ids(self) -> list[str]:
        return [log.label for log in self.store.hot.list_logs(LOG_PREFIX)]

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        threads = [str(config["configurable"]["thread_id"])] if config else self._thread_ids()
        want_ns = config["configurable"].get("checkpoint_ns") if config else None
        want_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        for thread_id in threads:
            state = self._sync(thread_id)
            if state is None:
                continue
            keys = sorted(state.checkpoints, key=lambda k: (k[0], k[1]), reverse=True)
            for ns, checkpoint_id in sorted(keys, key=lambda k: k[1], reverse=True):
                if want_ns is not None and ns != want_ns:
                    continue
                if want_id and checkpoint_id != want_id:
                    continue
                if before_id and checkpoint_id >= before_id:
                    continue
                if filter:
                    md_blob = state.checkpoints[(ns, checkpoint_id)][1]
                    metadata = self.serde.loads_typed((md_blob[0], md_blob[1]))
                    if not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                if limit is not None:
                    if limit <= 0:
                        return
                    limit -= 1
                yield self._tuple(thread_id, state, ns, checkpoint_id)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        state = self._view(thread_id)
        copy = dict(checkpoint)
        values: dict[str, Any] = copy.pop("channel_values", {})  # type: ignore[assignment]
        stored: list[list[Any]] = []
        tails: dict[tuple[str, str], tuple[Any, list[Any]]] = {}
        for channel, version in new_versions.items():
            if channel not in values:
                stored.append([channel, version, ["e"]])
                continue
            value = values[channel]
            blob: list[Any] | None = None
            if isinstance(value, list):
                tail = state.tails.get((ns, channel))
                if tail is not None and _extends(tail[1], value):
                    suffix = value[len(tail[1]) :]
                    blob = ["d", tail[0], self._place(thread_id, self.serde.dumps_typed(suffix))]
                tails[(ns, channel)] = (version, list(value))
            if blob is None:
                blob = self._place(thread_id, self.serde.dumps_typed(value))
            stored.append([channel, version, blob])
        cp_type, cp_data = self.serde.dumps_typed(copy)
        md_type, md_data = self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))
        record = {
            "k": "cp",
            "ns": ns,
            "id": checkpoint["id"],
            "parent": conf.get("checkpoint_id"),
            "cp": [cp_type, cp_data],
            "md": [md_type, md_data],
            "vals": stored,
        }
        self._append(thread_id, record)
        with self._lock:
            state.tails.update(tails)
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        items = [
            [
                WRITES_IDX_MAP.get(channel, idx),
                channel,
                self._place(thread_id, self.serde.dumps_typed(value)),
            ]
            for idx, (channel, value) in enumerate(writes)
        ]
        self._append(
            thread_id,
            {
                "k": "w",
                "ns": ns,
                "cid": conf["checkpoint_id"],
                "task": task_id,
                "path": task_path,
                "w": items,
            },
        )

    def delete_thread(self, thread_id: str) -> None:
        with self._lock:
            self._threads.pop(str(thread_id), None)
        self.store.delete_log(thread_log_id(str(thread_id)))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        source = self._records(str(source_thread_id))
        for rec in source:
            self._append(
                str(target_thread_id),
                self._rehome(str(source_thread_id), str(target_thread_id), rec),
            )

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}")
        for thread_id in map(str, thread_ids):
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            state = self._sync(thread_id)
            if state is None:
                continue
            # Rebuild the kept checkpoints as full records (no appends against dropped ones).
            kept = [self._tuple(thread_id, state, ns, cid) for ns, cid in state.latest.items()]
            self.delete_thread(thread_id)
            for tup in kept:
                checkpoint = tup.checkpoint
                versions = {
                    ch: checkpoint["channel_versions"][ch] for ch in checkpoint["channel_values"]
                }
                conf = dict(tup.config["configurable"])
                conf["checkpoint_id"] = (
                    tup.parent_config["configurable"]["checkpoint_id"]
                    if tup.parent_config
                    else None
                )
                self.put({"configurable": conf}, checkpoint, tup.metadata, versions)
                by_task: dict[tuple[str, str], list[tuple[str, Any]]] = {}
                for task_id, channel, value in tup.pending_writes or []:
                    by_task.setdefault((task_id, ""), []).append((channel, value))
                for (task_id, path), ws in by_task.items():
                    self.put_writes(tup.config, ws, task_id, path)

    def _records(self, thread_id: str) -> builtins.list[dict[str, Any]]:
        """Every record of the thread's log, decoded (for copying a thread)."""
        log_id = thread_log_id(thread_id)
        records = self.store.hot.read_log(log_id)
        frames = {r.position: self._frame(log_id, r) for r in records}
        scratch = _Thread()
        return [
            msgpack.unpackb(
                self._raw(log_id, scratch, r.position, frames), raw=False, strict_map_key=False
            )
            for r in records
        ]

    def _rehome(self, source: str, target: str, rec: dict[str, Any]) -> dict[str, Any]:
        """A record of ``source`` as one of ``target`` (cold blobs copied across)."""

        def move(blob: list[Any]) -> list[Any]:
            if blob[0] == "c":
                data = self.store.cold.get(thread_log_id(source), BlobRef(**blob[2]))
                ref = self.store.cold.put(thread_log_id(target), data, codec=blob[2]["codec"])
                return ["c", blob[1], ref.model_dump(mode="json")]
            if blob[0] == "d":
                return ["d", blob[1], move(blob[2])]
            return blob

        rec = dict(rec)
        if rec["k"] == "cp":
            rec["vals"] = [[ch, v, move(b)] for ch, v, b in rec["vals"]]
        elif rec["k"] == "w":
            rec["w"] = [[i, ch, move(b)] for i, ch, b in rec["w"]]
        return rec

    # ------------------------------------------------------------------ async

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        items = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in items:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


def _extends(base: list[Any], value: list[Any]) -> bool:
    """Is ``value`` ``base`` with items appended? Items are compared by identity, then equality
    (a list's ``==`` does exactly that, item by item, at C speed: a thread reloaded from the
    store holds equal, not identical, messages)."""
    if not base or len(value) < len(base):
        return False
    try:
        return bool(value[: len(base)] == base)
    except Exception:  # noqa: BLE001 - an item whose == is not a bool (arrays): store the whole value
        return False
