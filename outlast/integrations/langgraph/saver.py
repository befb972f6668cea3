"""LangGraph on Outlast: a checkpointer on the bi-tier store, and graphs run as durable functions.

``OutlastSaver(store)`` is a ``BaseCheckpointSaver`` (sync and async methods) that keeps each
LangGraph thread in Outlast's state store:

- a thread is a *parked* hot-tier run (``lgt-<hash of the thread id>``, function
  ``outlast.langgraph.thread``, suspended on a signal that never comes, so no sweeper or worker
  ever drives it) and its checkpoint records are an append-only log of that run's pending
  signals (``HotTier.put_signal`` / ``pending_signals``): one hot insert per ``put`` or
  ``put_writes``, whatever the thread's length;
- a record holds only the channels whose version changed (blobs keyed by
  (thread, namespace, channel, version)); a list channel that grew by appending (``add_messages``,
  ``operator.add``) stores only the appended items and names the version it extends;
- a channel value larger than an eighth of the hot tier's inline limit goes to the cold tier as an
  immutable blob named by its content (the record keeps the reference), and a record that is
  still too large goes cold whole.

``durable_graph(app, graph, name=...)`` registers a durable function that runs a compiled graph
one superstep per durable step, so the leg's budget is checked between supersteps and a hand-off
continues from the last checkpoint; ``interrupt()`` suspends the run on the signal ``resume``.

Values are serialised with LangGraph's own serializer (``JsonPlusSerializer``, msgpack; its
pickle fallback stays off).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import operator
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
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

from statestore import (
    BlobRef,
    CorruptStateError,
    LeaseHeldError,
    RunRecord,
    RunStatus,
    StateStore,
)

__all__ = ["THREAD_FUNCTION", "OutlastSaver", "thread_run_id"]

THREAD_FUNCTION = "outlast.langgraph.thread"
_PARKED_ON = "outlast.langgraph.never"  # the signal a thread run waits for; nobody sends it
_RECORD_SIGNAL = "lg"
_OWNER = "outlast-langgraph-saver"
_MAGIC = b"LGZ1"  # a record: msgpack {"z": [signal ids of its dictionary], "d": zstd bytes}
_DICT_RECORDS = 4  # a record is compressed against the raw bytes of the last few records

Key = tuple[str, str, Any]  # (namespace, channel, version)


def thread_run_id(thread_id: str) -> str:
    """The hot-tier run that holds a LangGraph thread's checkpoints."""
    return "lgt-" + hashlib.sha256(thread_id.encode()).hexdigest()[:24]


@dataclass
class _Thread:
    """What one process knows of one thread (rebuilt from the log, extended as it grows)."""

    incarnation: str = ""
    seen: int = 0  # records of the log applied
    synced: bool = False  # the log has been listed once (an exclusive saver lists it only once)
    last_id: str = ""  # signal id of the last record applied
    # (ns, checkpoint id) -> (checkpoint without values, metadata, parent id)
    checkpoints: dict[tuple[str, str], tuple[list[Any], list[Any], str | None]] = field(
        default_factory=dict
    )
    blobs: dict[Key, list[Any]] = field(default_factory=dict)  # stored blob descriptors
    writes: dict[tuple[str, str], dict[tuple[str, int], tuple[str, str, list[Any], str]]] = field(
        default_factory=dict
    )
    raw: dict[str, bytes] = field(default_factory=dict)  # signal id -> raw record, recent ones
    order: list[str] = field(default_factory=list)  # the recent records' ids, oldest first
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
        plus its own writes, without listing the thread's log again, so reads stop growing with
        the thread. Call ``forget(thread_id)`` when another writer may have run since."""
        super().__init__(serde=serde)
        self.store = store
        self.exclusive = exclusive
        self.inline_limit = (
            inline_limit if inline_limit is not None else max(1024, store.inline_limit // 8)
        )
        self._value_cache = value_cache
        self._threads: dict[str, _Thread] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ the thread's run

    def _record(self, thread_id: str, *, create: bool) -> RunRecord | None:
        """The thread's parked run, created and parked if ``create``; None if it has none."""
        sid = thread_run_id(thread_id)
        hot = self.store.hot
        record = hot.find_run(sid)
        if record is None:
            if not create:
                return None
            record = hot.create_run(sid, THREAD_FUNCTION, tags={"langgraph_thread": thread_id})
        deadline = time.monotonic() + 30.0
        while record.status is not RunStatus.SUSPENDED:
            if record.status.terminal or not record.status.takes_legs:
                raise RuntimeError(
                    f"langgraph thread {thread_id!r}: its run {sid!r} is {record.status.value}"
                )
            try:
                _, lease = hot.take_lease(sid, _OWNER, timedelta(seconds=10))
                record = hot.suspend(sid, lease.token, waiting_for=_PARKED_ON)
            except LeaseHeldError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02 + random.random() * 0.05)
                record = hot.get_run(sid)
        return record

    def forget(self, thread_id: str) -> None:
        """Drop what this saver knows of a thread: the next read lists its log again."""
        with self._lock:
            self._threads.pop(str(thread_id), None)

    def _sync(self, thread_id: str) -> _Thread | None:
        """Bring this process's view of the thread up to date; None if the thread has no data."""
        if self.exclusive:
            known = self._threads.get(thread_id)
            if known is not None and known.synced:
                return known
        record = self._record(thread_id, create=False)
        with self._lock:
            if record is None:
                self._threads.pop(thread_id, None)
                return None
            state = self._threads.get(thread_id)
            if state is None or state.incarnation != record.incarnation:
                state = _Thread(incarnation=record.incarnation)
                self._threads[thread_id] = state
            sid = record.run_id
            signals = self.store.hot.pending_signals(sid, _RECORD_SIGNAL)
            listing = {s.signal_id: s.payload for s in signals}
            for signal in signals:
                if signal.signal_id <= state.last_id:
                    continue
                raw = self._raw(sid, state, signal.signal_id, listing)
                self._apply(state, msgpack.unpackb(raw, raw=False, strict_map_key=False))
                state.last_id = signal.signal_id
                state.seen += 1
            state.synced = True
            return state

    def _raw(self, sid: str, state: _Thread, signal_id: str, listing: dict[str, Any]) -> bytes:
        """The raw bytes of record ``signal_id`` (decompressed against its dictionary)."""
        if signal_id in state.raw:
            return state.raw[signal_id]
        payload = listing.get(signal_id)
        if payload is None:
            raise CorruptStateError(
                f"langgraph record {signal_id} is missing (another names it as its dictionary)",
                run_id=sid,
                tier=self.store.hot.scheme,
                key=signal_id,
            )
        data = self.store.cold.get(sid, payload) if isinstance(payload, BlobRef) else payload
        if not data.startswith(_MAGIC):
            raise CorruptStateError(
                "not a langgraph checkpoint record", run_id=sid, tier="hot", key=signal_id
            )
        frame = msgpack.unpackb(data[len(_MAGIC) :], raw=False)
        prefix = b"".join(self._raw(sid, state, ref, listing) for ref in frame["z"])
        if prefix:
            dictionary = zstandard.ZstdCompressionDict(
                prefix, dict_type=zstandard.DICT_TYPE_RAWCONTENT
            )
            raw = zstandard.ZstdDecompressor(dict_data=dictionary).decompress(frame["d"])
        else:
            raw = zstandard.ZstdDecompressor().decompress(frame["d"])
        self._remember(state, signal_id, raw)
        return bytes(raw)

    def _remember(self, state: _Thread, signal_id: str, raw: bytes) -> None:
        state.raw[signal_id] = raw
        state.order.append(signal_id)
        while len(state.order) > 4 * _DICT_RECORDS:
            state.raw.pop(state.order.pop(0), None)

    def _append(self, thread_id: str, record: dict[str, Any], run: RunRecord | None = None) -> None:
        """Append one record: compressed against the last few this process knows, named."""
        run = run or self._record(thread_id, create=True)
        assert run is not None
        with self._lock:
            state = self._threads.get(thread_id)
            if state is None or state.incarnation != run.incarnation:
                state = self._threads[thread_id] = _Thread(incarnation=run.incarnation)
            refs = [r for r in state.order[-_DICT_RECORDS:] if r in state.raw]
            prefix = b"".join(state.raw[r] for r in refs)
        raw = msgpack.packb(record, use_bin_type=True)
        if len(prefix) >= 8:
            dictionary = zstandard.ZstdCompressionDict(
                prefix, dict_type=zstandard.DICT_TYPE_RAWCONTENT
            )
            data = zstandard.ZstdCompressor(level=3, dict_data=dictionary).compress(raw)
        else:
            refs = []
            data = zstandard.ZstdCompressor(level=3).compress(raw)
        framed = _MAGIC + msgpack.packb({"z": refs, "d": data}, use_bin_type=True)
        payload = self.store.place(run.run_id, framed)
        signal = self.store.hot.put_signal(run.run_id, _RECORD_SIGNAL, payload)
        with self._lock:
            self._remember(state, signal.signal_id, raw)
            if self.exclusive and state.synced:  # no other writer: what we wrote is all there is
                self._apply(state, record)
                state.last_id = max(state.last_id, signal.signal_id)
                state.seen += 1

    # ------------------------------------------------------------------ records

    def _apply(self, state: _Thread, rec: dict[str, Any]) -> None:
        ns = rec["ns"]
        if rec["k"] == "cp":
            state.checkpoints[(ns, rec["id"])] = (rec["cp"], rec["md"], rec["parent"])
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
            ref = self.store.cold.put(thread_run_id(thread_id), data, codec=f"langgraph/{kind}")
            return ["c", kind, ref.model_dump(mode="json")]
        return ["v", kind, data]

    def _unplace(self, thread_id: str, blob: list[Any]) -> Any:
        if blob[0] == "c":
            data = self.store.cold.get(thread_run_id(thread_id), BlobRef(**blob[2]))
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
            ids = [cid for (n, cid) in state.checkpoints if n == ns]
            if not ids:
                return None
            checkpoint_id = max(ids)
        elif (ns, checkpoint_id) not in state.checkpoints:
            return None
        return self._tuple(thread_id, state, ns, checkpoint_id)

    def _thread_ids(self) -> list[str]:
        found: list[str] = []
        for record in self.store.hot.list_runs(limit=1_000_000):
            if record.function == THREAD_FUNCTION and "langgraph_thread" in record.tags:
                found.append(record.tags["langgraph_thread"])
        return found

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
        run = self._record(thread_id, create=True)
        assert run is not None
        with self._lock:
            state = self._threads.get(thread_id)
            if state is None or state.incarnation != run.incarnation:
                state = self._threads[thread_id] = _Thread(incarnation=run.incarnation)
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
        self._append(thread_id, record, run)
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
        sid = thread_run_id(str(thread_id))
        with self._lock:
            self._threads.pop(str(thread_id), None)
        if self.store.hot.find_run(sid) is not None:
            self.store.delete_run(sid)

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
            latest: dict[str, str] = {}
            for ns, cid in state.checkpoints:
                if cid > latest.get(ns, ""):
                    latest[ns] = cid
            # Rebuild the kept checkpoints as full records (no appends against dropped ones).
            kept = [self._tuple(thread_id, state, ns, cid) for ns, cid in latest.items()]
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
        sid = thread_run_id(thread_id)
        if self.store.hot.find_run(sid) is None:
            return []
        signals = self.store.hot.pending_signals(sid, _RECORD_SIGNAL)
        listing = {s.signal_id: s.payload for s in signals}
        scratch = _Thread()
        return [
            msgpack.unpackb(
                self._raw(sid, scratch, s.signal_id, listing), raw=False, strict_map_key=False
            )
            for s in signals
        ]

    def _rehome(self, source: str, target: str, rec: dict[str, Any]) -> dict[str, Any]:
        """A record of ``source`` as one of ``target`` (cold blobs copied across)."""

        def move(blob: list[Any]) -> list[Any]:
            if blob[0] == "c":
                data = self.store.cold.get(thread_run_id(source), BlobRef(**blob[2]))
                ref = self.store.cold.put(thread_run_id(target), data, codec=blob[2]["codec"])
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
    """Is ``value`` ``base`` with items appended? Items are compared by identity, then equality."""
    if not base or len(value) < len(base):
        return False
    if all(map(operator.is_, base, value)):  # the usual case, at C speed
        return True
    try:
        return all(a is b or a == b for a, b in zip(base, value, strict=False))
    except Exception:  # noqa: BLE001 - an item whose == is not a bool (arrays): store the whole value
        return False
