"""``durable_graph``: a compiled LangGraph graph run as an Outlast durable function.

One durable step per superstep (``langgraph.superstep``): the step runs the graph until its next
checkpoint (``interrupt_after="*"``), with ``durability="sync"`` so the checkpoint is stored
before the step commits. A leg that dies mid-superstep loses only that superstep: the next leg's
step finds the last checkpoint and continues from it. The step's journaled value is only whether
the graph is done and what it is interrupted on; the graph's state lives in the checkpointer.

Graphs whose nodes are ``async def`` run in an ``async def`` durable function (``AsyncContext``)
with ``astream``; others in a sync one with ``stream``. ``mode`` picks, or ``"auto"`` looks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.pregel import Pregel
from langgraph.types import Command, StateSnapshot

from outlast import App, AsyncContext, Context, DurableFunction, NonRetryableError
from outlast.errors import LeaseLost

from .saver import OutlastSaver

__all__ = [
    "RESUME_SIGNAL",
    "GraphChangedError",
    "UnstorableNodeResultError",
    "durable_graph",
    "has_async_nodes",
]

RESUME_SIGNAL = "resume"
STEP = "langgraph.superstep"
OUTPUT_STEP = "langgraph.output"
_BRANCH = "branch:to:"

Mode = Literal["auto", "sync", "async"]
Graph = Pregel[Any, Any, Any, Any]


class GraphChangedError(NonRetryableError):
    """The run's last checkpoint names a node (or channel) the graph no longer has.

    Not retryable: retrying the same code cannot help. The checkpoints are untouched, so once
    the graph the run started with is deployed again, ``outlast runs retry RUN`` continues it.
    """


class UnstorableNodeResultError(NonRetryableError):
    """A node returned a value the checkpointer's serializer refuses; nothing of it was stored."""


def has_async_nodes(graph: Graph) -> bool:
    """Whether some node (in a subgraph too) has only an ``async def`` implementation.

    Such a node cannot run under ``graph.invoke``/``stream``: LangGraph raises for it. Nodes
    with both (``ToolNode``, ``RunnableLambda(f, afunc=g)``) or only a sync one run either way.
    """
    for node in graph.nodes.values():
        bound = node.bound
        if isinstance(bound, Pregel):
            if has_async_nodes(bound):
                return True
        # LangGraph's RunnableCallable keeps an ``async def`` node as ``afunc`` with no ``func``.
        elif getattr(bound, "func", False) is None and getattr(bound, "afunc", None) is not None:
            return True
    return False


def _is_internal(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def check_unchanged(graph: Graph, name: str, thread_id: str, tup: CheckpointTuple) -> None:
    """Raise ``GraphChangedError`` if the checkpoint names nodes or channels the graph lacks.

    LangGraph itself does not complain: a checkpoint whose next node was renamed continues as if
    the graph had ended, silently returning a half-done state. Removed or renamed nodes are what
    this catches; added nodes and edges are compatible and pass.
    """
    nodes, channels = set(graph.nodes), set(graph.channels)
    checkpoint = tup.checkpoint
    missing_nodes: set[str] = set()
    missing_channels: set[str] = set()
    for node in checkpoint["versions_seen"]:
        if not _is_internal(node) and node not in nodes:
            missing_nodes.add(node)
    written = [channel for _task, channel, _value in tup.pending_writes or []]
    for channel in [*checkpoint["channel_versions"], *written]:
        if _is_internal(channel) or channel in channels:
            continue
        if channel.startswith(_BRANCH):
            missing_nodes.add(channel.removeprefix(_BRANCH).split(":")[0])
        else:
            missing_channels.add(channel)
    missing_nodes -= nodes
    if not missing_nodes and not missing_channels:
        return
    what = [f"node {n!r}" for n in sorted(missing_nodes)]
    what += [f"channel {c!r}" for c in sorted(missing_channels)]
    checkpoint_id = tup.config["configurable"].get("checkpoint_id")
    raise GraphChangedError(
        f"graph {name!r} changed between legs: the run's last checkpoint (thread {thread_id!r}, "
        f"checkpoint {checkpoint_id}) has {', '.join(what)}, which the graph no longer has "
        f"(its nodes: {', '.join(sorted(n for n in nodes if not _is_internal(n)))}). "
        "Nothing was run or lost: deploy the graph the run started with and retry the run "
        "(outlast runs retry), or start a new run for the new graph"
    )


def _unstorable(name: str, snap: StateSnapshot, exc: Exception) -> UnstorableNodeResultError | None:
    """If the checkpointer's serializer refused a value, the error naming the node it came from.

    LangGraph stores a task's writes (``put_writes``) before it streams the task's update, so
    the refusal surfaces as the serializer's own error, naming a type but no node. The traceback
    says both whether it came from the serializer (a ``dumps_typed`` frame) and, through
    ``put_writes``'s ``task_id`` argument, which of this superstep's tasks wrote the value.
    """
    refused, task_id = False, None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "dumps_typed":
            refused = True
        elif frame.f_code.co_name in ("put_writes", "aput_writes"):
            found = frame.f_locals.get("task_id")
            task_id = found if isinstance(found, str) else task_id
        tb = tb.tb_next
    if not refused:
        return None
    names = {task.id: task.name for task in snap.tasks}
    nodes = [names[task_id]] if task_id in names else sorted(set(names.values()))
    which = (
        f"node {nodes[0]!r}" if len(nodes) == 1 else "one of nodes " + ", ".join(map(repr, nodes))
    )
    return UnstorableNodeResultError(
        f"graph {name!r}: the result of {which} cannot be stored by the checkpointer "
        f"({type(exc).__name__}: {exc}); nodes must return values it can serialize (plain "
        "values, messages, dataclasses, pydantic models). The last checkpoint is kept as it was"
    )


def _messages(update: Any) -> Iterator[BaseMessage]:
    values = update.values() if isinstance(update, dict) else ()
    for value in values:
        if isinstance(value, BaseMessage):
            yield value
        elif isinstance(value, list):
            yield from (m for m in value if isinstance(m, BaseMessage))


def _usage(updates: list[dict[str, Any]]) -> dict[str, int]:
    """Tokens of the model calls this superstep made, from the messages' ``usage_metadata``."""
    tokens = {"input_tokens": 0, "output_tokens": 0}
    for chunk in updates:
        for node, update in chunk.items():
            if _is_internal(node):
                continue
            for message in _messages(update):
                usage = getattr(message, "usage_metadata", None) or {}
                for key in tokens:
                    tokens[key] += int(usage.get(key, 0))
    return tokens if any(tokens.values()) else {}


def holds_lease(ctx: Context | AsyncContext) -> None:
    """Raise ``LeaseLost`` unless the leg still holds its lease: no renewal failed, and the
    lease as last renewed has not run out.

    Called before each checkpoint append of a superstep. A leg paused past its lease (a stopped
    process, a long GC, a partitioned host) may wake while another leg runs the graph: its
    journal writes are fenced by the store, and this keeps its checkpoints out of the thread.
    (A lease lost in the instant between this check and the append is not caught.)
    """
    leased = ctx.leased
    if not leased.writable:
        raise LeaseLost(f"run {ctx.run_id!r}: this leg lost its lease; it writes no checkpoints")
    if leased.lease.expires_at <= leased.store.hot.now():
        raise LeaseLost(
            f"run {ctx.run_id!r}: this leg's lease ran out at {leased.lease.expires_at}; "
            "it writes no more checkpoints"
        )


def _interrupts(snap: StateSnapshot) -> list[Any]:
    return [i.value for task in snap.tasks for i in task.interrupts]


_SKIP = object()
_RAN = object()


def _step_of(snap: StateSnapshot) -> int | None:
    step = (snap.metadata or {}).get("step")
    return step if isinstance(step, int) else None


def _next_input(snap: StateSnapshot, graph_input: Any, resume: list[Any], after: int | None) -> Any:
    """What to feed the graph for its next superstep; ``_SKIP`` if there is nothing to run,
    ``_RAN`` if a leg that died before committing the step already ran this superstep.

    ``after`` is the checkpoint step the previous durable step ended on (0 before the first:
    the input checkpoint is step -1, the ``__start__`` superstep 0).
    """
    if snap.created_at is None:  # nothing checkpointed yet: this is the first superstep
        return graph_input
    step = _step_of(snap)
    if after is not None and step is not None and step > after:
        # The checkpoint is past where the journal says the graph was: running again would
        # skip ahead a superstep, and this step's entry (and its tokens) would be lost.
        return _RAN
    if _interrupts(snap):
        # No payload: a retried step of a leg that died after the interrupt; wait again.
        return Command(resume=resume[0]) if resume else _SKIP
    if not snap.tasks:  # finished (a leg died after the last superstep, before its commit)
        return _SKIP
    # Pending tasks left: run on. (Not ``snap.next``: it leaves out tasks whose writes were
    # saved, so a leg that died after its tasks' writes but before the checkpoint would look
    # finished, and their writes would never be applied.)
    return None  # continue from the last checkpoint (after a stop, a hand-off or a death)


def _outcome(snap: StateSnapshot) -> dict[str, Any]:
    interrupts = _interrupts(snap)
    return {
        "done": not snap.tasks and not interrupts,
        "interrupts": interrupts,
        "step": _step_of(snap),
    }


def _added_messages(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages ``after``'s channels hold that ``before``'s did not, as one update.

    ``add_messages`` gives every message an id; lists of messages without ids are compared by
    length (an appending channel only grows).
    """
    added: list[BaseMessage] = []
    for key, value in after.items():
        if not isinstance(value, list):
            continue
        old = before.get(key)
        old = old if isinstance(old, list) else []
        new = [m for m in value if isinstance(m, BaseMessage)]
        if all(m.id for m in new):
            seen = {m.id for m in old if isinstance(m, BaseMessage)}
            added += [m for m in new if m.id not in seen]
        else:
            added += [m for m in value[len(old) :] if isinstance(m, BaseMessage)]
    return [{"graph": {"messages": added}}]


def durable_graph(
    app: App,
    graph: Graph,
    *,
    name: str | None = None,
    output: Callable[[dict[str, Any]], Any] | None = None,
    saver: OutlastSaver | None = None,
    mode: Mode = "auto",
) -> DurableFunction[Any]:
    """Register a durable function that runs ``graph`` across legs; returns it.

    The run's input is the graph's input; its result is the graph's final state (or
    ``output(state)``). Each superstep is one durable step (``langgraph.superstep``), so the leg's
    budget is checked between supersteps and a hand-off, an eviction or a kill costs at most the
    superstep in flight: the next leg continues from the last checkpoint (and LangGraph skips the
    tasks whose writes were saved). The thread id is the run id. An ``interrupt()`` suspends the
    run on the signal ``resume``; its payload resumes the graph as ``Command(resume=payload)``.

    ``mode="async"`` registers an ``async def`` function (``AsyncContext``) that runs each
    superstep with ``astream``: needed when nodes are ``async def``. ``"sync"`` registers a sync
    one (``stream``). ``"auto"`` (the default) is async when ``has_async_nodes(graph)``.

    A node recorded in the last checkpoint but missing from ``graph`` fails the run with
    ``GraphChangedError``; a node result the serializer refuses, with
    ``UnstorableNodeResultError``. Both name the node; neither touches the stored checkpoints.
    """
    if mode not in ("auto", "sync", "async"):
        raise ValueError(f"mode must be 'auto', 'sync' or 'async', not {mode!r}")
    label = name or getattr(graph, "name", None) or "graph"
    run_async = mode == "async" or (mode == "auto" and has_async_nodes(graph))
    holder: list[Graph] = []
    savers: list[OutlastSaver] = []

    def compiled() -> Graph:
        if not holder:
            # The leg holding the run's lease is the thread's only writer: an exclusive saver
            # lists the thread's log once per leg, not at every superstep.
            savers.append(saver or OutlastSaver(app.store, exclusive=True))
            holder.append(graph.copy(update={"checkpointer": savers[0]}))
        return holder[0]

    def config_of(thread_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id}}

    def annotate(ctx: Context | AsyncContext, updates: list[dict[str, Any]]) -> None:
        usage = _usage(updates)
        if usage:  # the run report sums these per step and per leg
            ctx.annotate(**usage)

    def superstep(
        ctx: Context,
        thread_id: str,
        graph_input: Any,
        resume: list[Any],
        after: int | None,
        leg: dict[str, bool],
    ) -> dict[str, Any]:
        g, config = compiled(), config_of(thread_id)
        if not leg["checked"]:  # the graph cannot change within a process: once per leg
            tup = savers[0].get_tuple(config)
            if tup is not None:
                check_unchanged(g, label, thread_id, tup)
            leg["checked"] = True
        snap = g.get_state(config)
        inp = _next_input(snap, graph_input, resume, after)
        if inp is _RAN:
            parent = g.get_state(snap.parent_config) if snap.parent_config else None
            annotate(ctx, _added_messages(parent.values if parent else {}, snap.values))
            return _outcome(snap)
        if inp is _SKIP:
            return _outcome(snap)
        updates: list[dict[str, Any]] = []
        try:
            with savers[0].fenced(lambda: holds_lease(ctx)):
                for chunk in g.stream(
                    inp, config, stream_mode="updates", interrupt_after="*", durability="sync"
                ):
                    updates.append(chunk)
        except Exception as exc:
            refused = _unstorable(label, snap, exc)
            if refused is not None:
                raise refused from exc
            raise
        annotate(ctx, updates)
        return _outcome(g.get_state(config))

    async def asuperstep(
        ctx: AsyncContext,
        thread_id: str,
        graph_input: Any,
        resume: list[Any],
        after: int | None,
        leg: dict[str, bool],
    ) -> dict[str, Any]:
        g, config = compiled(), config_of(thread_id)
        if not leg["checked"]:
            tup = await savers[0].aget_tuple(config)
            if tup is not None:
                check_unchanged(g, label, thread_id, tup)
            leg["checked"] = True
        snap = await g.aget_state(config)
        inp = _next_input(snap, graph_input, resume, after)
        if inp is _RAN:
            parent = await g.aget_state(snap.parent_config) if snap.parent_config else None
            annotate(ctx, _added_messages(parent.values if parent else {}, snap.values))
            return _outcome(snap)
        if inp is _SKIP:
            return _outcome(snap)
        updates: list[dict[str, Any]] = []
        try:
            with savers[0].fenced(lambda: holds_lease(ctx)):
                async for chunk in g.astream(
                    inp, config, stream_mode="updates", interrupt_after="*", durability="sync"
                ):
                    updates.append(chunk)
        except Exception as exc:
            refused = _unstorable(label, snap, exc)
            if refused is not None:
                raise refused from exc
            raise
        annotate(ctx, updates)
        return _outcome(await g.aget_state(config))

    def final(thread_id: str) -> Any:
        values = compiled().get_state(config_of(thread_id)).values
        return output(values) if output is not None else values

    async def afinal(thread_id: str) -> Any:
        values = (await compiled().aget_state(config_of(thread_id))).values
        return output(values) if output is not None else values

    def run_graph(ctx: Context, graph_input: Any = None) -> Any:
        compiled()
        savers[0].forget(ctx.run_id)  # a new leg: another process may have written since
        leg = {"checked": False}
        resume: list[Any] = []
        after: int | None = 0
        while True:
            out = ctx.step(superstep, ctx, ctx.run_id, graph_input, resume, after, leg, name=STEP)
            resume, after = [], out.get("step")
            if out["done"]:
                break
            if out["interrupts"]:
                resume = [ctx.wait_for_signal(RESUME_SIGNAL)]
        return ctx.step(final, ctx.run_id, name=OUTPUT_STEP)

    async def arun_graph(ctx: AsyncContext, graph_input: Any = None) -> Any:
        compiled()
        savers[0].forget(ctx.run_id)
        leg = {"checked": False}
        resume: list[Any] = []
        after: int | None = 0
        while True:
            out = await ctx.step(
                asuperstep, ctx, ctx.run_id, graph_input, resume, after, leg, name=STEP
            )
            resume, after = [], out.get("step")
            if out["done"]:
                break
            if out["interrupts"]:
                resume = [await ctx.wait_for_signal(RESUME_SIGNAL)]
        return await ctx.step(afinal, ctx.run_id, name=OUTPUT_STEP)

    fn: Callable[..., Any] = arun_graph if run_async else run_graph
    fn.__name__ = fn.__qualname__ = label
    return app.durable(name=name)(fn)
