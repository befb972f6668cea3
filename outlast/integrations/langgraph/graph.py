"""``durable_graph``: a compiled LangGraph graph run as an Outlast durable function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Command

from outlast import App, Context, DurableFunction

from .saver import OutlastSaver

__all__ = ["RESUME_SIGNAL", "durable_graph"]

RESUME_SIGNAL = "resume"


def durable_graph(
    app: App,
    graph: Pregel[Any, Any, Any, Any],
    *,
    name: str | None = None,
    output: Callable[[dict[str, Any]], Any] | None = None,
    saver: OutlastSaver | None = None,
) -> DurableFunction[Any]:
    """Register a durable function that runs ``graph`` across legs; returns it.

    The run's input is the graph's input; its result is the graph's final state (or
    ``output(state)``). Each superstep is one durable step (``langgraph.superstep``), so the leg's
    budget is checked between supersteps and a hand-off, an eviction or a kill costs at most the
    superstep in flight: the next leg continues from the last checkpoint (and LangGraph skips the
    tasks whose writes were saved). The thread id is the run id. An ``interrupt()`` suspends the
    run on the signal ``resume``; its payload resumes the graph as ``Command(resume=payload)``.
    """
    holder: list[Pregel[Any, Any, Any, Any]] = []
    savers: list[OutlastSaver] = []

    def compiled() -> Pregel[Any, Any, Any, Any]:
        if not holder:
            # The leg holding the run's lease is the thread's only writer: an exclusive saver
            # lists the thread's log once per leg, not at every superstep.
            savers.append(saver or OutlastSaver(app.store, exclusive=True))
            holder.append(graph.copy(update={"checkpointer": savers[0]}))
        return holder[0]

    def superstep(thread_id: str, graph_input: Any, resume: list[Any]) -> dict[str, Any]:
        g = compiled()
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        snap = g.get_state(config)
        interrupts = [i.value for task in snap.tasks for i in task.interrupts]
        inp: Any
        if snap.created_at is None:  # nothing checkpointed yet: this is the first superstep
            inp = graph_input
        elif interrupts:
            if not resume:  # a retried step of a leg that died after the interrupt
                return {"done": False, "interrupts": interrupts}
            inp = Command(resume=resume[0])
        elif not snap.next:  # finished (a leg died after the last superstep, before its commit)
            return {"done": True, "interrupts": []}
        else:  # continue from the last checkpoint (after a stop, a hand-off or a death)
            inp = None
        g.invoke(inp, config, interrupt_after="*", durability="sync")
        snap = g.get_state(config)
        interrupts = [i.value for task in snap.tasks for i in task.interrupts]
        return {"done": not snap.next and not interrupts, "interrupts": interrupts}

    def final(thread_id: str) -> Any:
        values = compiled().get_state({"configurable": {"thread_id": thread_id}}).values
        return output(values) if output is not None else values

    def run_graph(ctx: Context, graph_input: Any = None) -> Any:
        compiled()
        savers[0].forget(ctx.run_id)  # a new leg: another process may have written since
        resume: list[Any] = []
        while True:
            out = ctx.step(superstep, ctx.run_id, graph_input, resume, name="langgraph.superstep")
            resume = []
            if out["done"]:
                break
            if out["interrupts"]:
                resume = [ctx.wait_for_signal(RESUME_SIGNAL)]
        return ctx.step(final, ctx.run_id, name="langgraph.output")

    run_graph.__name__ = run_graph.__qualname__ = name or getattr(graph, "name", None) or "graph"
    return app.durable(name=name)(run_graph)
