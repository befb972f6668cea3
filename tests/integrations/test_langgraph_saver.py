"""What ``OutlastSaver`` writes: only changed channels, only appended items, large values cold."""

from __future__ import annotations

import asyncio
import base64
import operator
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph")

from langgraph.graph import START, MessagesState, StateGraph

from outlast.integrations.langgraph import OutlastSaver, thread_log_id
from statestore import BlobRef, StateStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = open_store(f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold")
    yield opened
    opened.close()


def _payload_sizes(store: StateStore, thread_id: str) -> list[int]:
    sizes = []
    for record in store.hot.read_log(thread_log_id(thread_id)):
        payload = record.payload
        sizes.append(payload.size if isinstance(payload, BlobRef) else len(payload or b""))
    return sizes


def test_bytes_per_turn_do_not_grow_with_the_thread(store: StateStore) -> None:
    rng = random.Random(3)
    texts = [base64.b64encode(rng.randbytes(600)).decode() for _ in range(300)]

    def reply(state: MessagesState) -> dict[str, Any]:
        n = len(state["messages"])
        return {"messages": [{"role": "ai", "content": texts[n % 300]}]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    graph = builder.compile(checkpointer=OutlastSaver(store))
    config: Any = {"configurable": {"thread_id": "chat"}}
    per_turn: list[int] = []
    for turn in range(120):
        before = sum(_payload_sizes(store, "chat"))
        user: Any = {"messages": [{"role": "user", "content": texts[turn]}]}
        graph.invoke(user, config)
        per_turn.append(sum(_payload_sizes(store, "chat")) - before)
    early, late = sum(per_turn[5:15]) / 10, sum(per_turn[-10:]) / 10
    assert late <= early * 1.2, (early, late)
    # A fresh saver (another process) rebuilds the whole conversation from the deltas.
    fresh = OutlastSaver(store)
    tup = fresh.get_tuple(config)
    assert tup is not None
    messages = tup.checkpoint["channel_values"]["messages"]
    assert len(messages) == 240
    assert [m.content for m in messages[::2]] == texts[:120]


class Counter(TypedDict, total=False):
    big: str
    count: int
    log: Annotated[list[int], operator.add]


def test_unchanged_channels_are_not_rewritten_and_large_values_go_cold(
    store: StateStore, tmp_path: Path
) -> None:
    big = base64.b64encode(random.Random(1).randbytes(30_000)).decode()

    def tick(state: Counter) -> Counter:
        return {"count": state.get("count", 0) + 1, "log": [state.get("count", 0)]}

    builder = StateGraph(Counter)
    builder.add_node("tick", tick)
    builder.add_edge(START, "tick")
    graph = builder.compile(checkpointer=OutlastSaver(store))
    config: Any = {"configurable": {"thread_id": "t"}}
    graph.invoke({"big": big}, config)
    blobs = list((tmp_path / "cold").rglob("*"))
    assert any(f.is_file() for f in blobs)  # the 40 KB value went to the cold tier
    cold_before = sum(f.stat().st_size for f in (tmp_path / "cold").rglob("*") if f.is_file())
    hot_before = sum(_payload_sizes(store, "t"))
    for _ in range(5):
        graph.invoke({"count": 0}, config)
    cold_after = sum(f.stat().st_size for f in (tmp_path / "cold").rglob("*") if f.is_file())
    assert cold_after == cold_before  # 'big' did not change: never written again
    assert sum(_payload_sizes(store, "t")) - hot_before < 10_000
    state = graph.get_state(config).values
    assert state["big"] == big and state["log"] == [0, 0, 0, 0, 0, 0]


def test_async_methods_and_copy_prune(store: StateStore) -> None:
    asyncio.run(_async_methods_and_copy_prune(store))


async def _async_methods_and_copy_prune(store: StateStore) -> None:
    saver = OutlastSaver(store)

    def tick(state: Counter) -> Counter:
        return {"count": state.get("count", 0) + 1, "log": [state.get("count", 0)]}

    builder = StateGraph(Counter)
    builder.add_node("tick", tick)
    builder.add_edge(START, "tick")
    graph = builder.compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "a"}}
    for _ in range(3):
        await graph.ainvoke({"count": 0}, config)
    assert (await graph.aget_state(config)).values["log"] == [0, 0, 0]
    await saver.acopy_thread("a", "b")
    copied = await saver.aget_tuple({"configurable": {"thread_id": "b"}})
    assert copied is not None and copied.checkpoint["channel_values"]["log"] == [0, 0, 0]
    await saver.aprune(["b"])
    assert len([t async for t in saver.alist({"configurable": {"thread_id": "b"}})]) == 1
    pruned = await saver.aget_tuple({"configurable": {"thread_id": "b"}})
    assert pruned is not None and pruned.checkpoint["channel_values"]["log"] == [0, 0, 0]
    await saver.adelete_thread("a")
    assert await saver.aget_tuple(config) is None


# ---------------------------------------------------------------------- real use: several writers,
# delete and re-create, store faults on every call


def _chat_graph(saver: OutlastSaver, replies: list[str]) -> Any:
    def reply(state: MessagesState) -> dict[str, Any]:
        turn = sum(1 for m in state["messages"] if m.type == "ai")
        return {"messages": [{"role": "ai", "content": replies[turn]}]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


def _contents(graph: Any, config: Any) -> list[str]:
    return [m.content for m in graph.get_state(config).values.get("messages", [])]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_two_processes_take_turns_on_one_thread(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two savers on two handles (two processes) answer alternate turns of one thread; each
    sees the other's checkpoints, and a large value written by one is read by the other."""
    from tests.conftest import unique

    if kind == "sqlite":
        hot = f"sqlite:///{tmp_path}/hot.db"
    else:
        hot = f"{request.getfixturevalue('redis_server').url}?prefix={unique('lgtwo')}"
    stores = [open_store(hot, f"file://{tmp_path}/cold") for _ in range(2)]
    rng = random.Random(11)
    texts = [base64.b64encode(rng.randbytes(300 if i % 7 else 9_000)).decode() for i in range(24)]
    replies = texts[1::2]
    graphs = [_chat_graph(OutlastSaver(s), replies) for s in stores]
    config: Any = {"configurable": {"thread_id": "shared thread / any text"}}
    for turn in range(12):
        graphs[turn % 2].invoke(
            {"messages": [{"role": "user", "content": texts[2 * turn]}]}, config
        )
    for graph in graphs:
        assert _contents(graph, config) == texts
    assert OutlastSaver(stores[0])._thread_ids() == ["shared thread / any text"]
    for s in stores:
        s.close()


def test_a_view_from_before_delete_and_recreate_is_not_mixed_in(store: StateStore) -> None:
    old_view, other = OutlastSaver(store), OutlastSaver(store)
    config: Any = {"configurable": {"thread_id": "t"}}
    first = _chat_graph(old_view, [f"old reply {i}" for i in range(5)])
    for i in range(3):
        first.invoke({"messages": [{"role": "user", "content": f"old {i}"}]}, config)
    other.delete_thread("t")
    second = _chat_graph(other, [f"new reply {i}" for i in range(5)])
    for i in range(4):  # the new log grows past the old view's position
        second.invoke({"messages": [{"role": "user", "content": f"new {i}"}]}, config)
    expected = [x for i in range(4) for x in (f"new {i}", f"new reply {i}")]
    assert _contents(first, config) == expected  # the old view started over
    first.invoke({"messages": [{"role": "user", "content": "new 4"}]}, config)
    assert _contents(second, config) == [*expected, "new 4", "old reply 4"]


@pytest.mark.parametrize("exclusive", [False, True])
def test_store_faults_on_every_call_lose_nothing_committed(tmp_path: Path, exclusive: bool) -> None:
    """Errors before writes, lost replies after writes landed, failed reads and simulated kills,
    drawn per call: a turn that fails is resumed as durable_graph would (from the last checkpoint,
    by a fresh saver after a kill), and the conversation ends exactly as without faults."""
    from outlast.testing.store_faults import (
        FaultInjector,
        FaultRates,
        FaultyColdTier,
        FaultyHotTier,
        SimulatedKill,
    )
    from statestore import StoreUnavailableError

    seed = random.randrange(1 << 30)
    rates = FaultRates(
        error_before=0.05, lost_reply=0.08, read_error=0.05, kill_before=0.02, kill_after=0.02
    )
    injector = FaultInjector(seed, rates)
    inner = open_store(f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold")
    faulty = StateStore(FaultyHotTier(inner.hot, injector), FaultyColdTier(inner.cold, injector))
    rng = random.Random(seed)
    turns = 25
    users = [
        base64.b64encode(rng.randbytes(rng.choice([200, 2_000, 12_000]))).decode()
        for _ in range(turns)
    ]
    replies = [f"reply {i}: " + users[i][:50] for i in range(turns)]
    config: Any = {"configurable": {"thread_id": "faulty"}}
    graph = _chat_graph(OutlastSaver(faulty, exclusive=exclusive), replies)
    failures = 0
    last: BaseException | None = None
    try:
        for turn in range(turns):
            for _attempt in range(200):
                try:
                    state = graph.get_state(config)
                    done = [m.content for m in state.values.get("messages", [])]
                    if users[turn] not in done:  # the input was not committed: send it
                        graph.invoke(
                            {"messages": [{"role": "user", "content": users[turn]}]}, config
                        )
                    elif state.tasks:  # committed input, reply missing: resume
                        # (``next`` leaves out tasks whose writes were saved: not enough.)
                        graph.invoke(None, config)
                    break
                except (StoreUnavailableError, SimulatedKill) as exc:
                    last = exc
                    failures += 1
                    injector.revive(thread_log_id("faulty"))
                    # A kill loses the process: the next attempt is a new saver; an error keeps it.
                    graph = _chat_graph(OutlastSaver(faulty, exclusive=exclusive), replies)
            else:
                raise AssertionError(f"seed {seed}: turn {turn} never got through: {last!r}")
        with injector.scope("off"):
            fresh = _chat_graph(OutlastSaver(inner), replies)
            names = {u: f"u{i}" for i, u in enumerate(users)} | {
                r: f"r{i}" for i, r in enumerate(replies)
            }
            got = [names.get(c, "?") for c in _contents(fresh, config)]
            assert got == [x for i in range(turns) for x in (f"u{i}", f"r{i}")], f"seed {seed}"
        assert failures > 0, f"seed {seed}: no fault fired; the test tested nothing"
    finally:
        inner.close()


def test_an_appended_list_is_recognised_by_equal_items_not_only_identical_ones() -> None:
    from outlast.integrations.langgraph.saver import _extends

    class Ambiguous:
        """An item whose == is not a bool (as a numpy array's is)."""

        def __eq__(self, other: object) -> Any:
            raise ValueError("the truth value of an array is ambiguous")

        __hash__ = object.__hash__

    base = [{"role": "user", "content": "hi"}, {"role": "ai", "content": "hello"}]
    reloaded = [dict(m) for m in base]  # as read back from the store: equal, not identical
    assert _extends(base, [*reloaded, {"role": "user", "content": "more"}])
    assert _extends(base, list(base))
    assert not _extends(base, [base[0], {"role": "ai", "content": "edited"}, base[1]])
    assert not _extends(base, base[:1])
    assert not _extends([], base)
    odd = Ambiguous()
    assert _extends([odd], [odd, 1])  # identical: == is never asked
    assert not _extends([odd], [Ambiguous(), 1])  # store the whole value instead of failing


def test_a_view_that_no_longer_keeps_a_dictionary_record_reads_it_again(
    store: StateStore,
) -> None:
    """A record is compressed against the raw bytes of the records before it. A view that has
    dropped those (here: emptied by hand, as a long-lived view's bounded memory would) reads
    them back from the store, a bounded page of the log, and decodes the same conversation."""
    config: Any = {"configurable": {"thread_id": "long"}}
    rng = random.Random(5)
    texts = [base64.b64encode(rng.randbytes(200)).decode() for _ in range(40)]
    writer = _chat_graph(OutlastSaver(store), texts[1::2])
    reader_saver = OutlastSaver(store)
    reader = _chat_graph(reader_saver, texts[1::2])
    for turn in range(10):
        writer.invoke({"messages": [{"role": "user", "content": texts[2 * turn]}]}, config)
    assert _contents(reader, config) == texts[:20]
    state = reader_saver._threads["long"]
    assert state.raw  # the view kept the recent records' raw bytes
    state.raw.clear()
    reads: list[tuple[int, int | None]] = []
    real_read = store.hot.read_log

    def counted(log_id: str, start: int = 0, *, limit: int | None = None) -> Any:
        reads.append((start, limit))
        return real_read(log_id, start, limit=limit)

    store.hot.read_log = counted  # type: ignore[method-assign]
    for turn in range(10, 20):
        writer.invoke({"messages": [{"role": "user", "content": texts[2 * turn]}]}, config)
    assert _contents(reader, config) == texts
    assert any(limit is not None for _, limit in reads), reads  # the bounded re-read ran
