"""LangGraph on Outlast: a checkpointer on the bi-tier store, and graphs run as durable functions.

- ``OutlastSaver`` (``saver.py``): a ``BaseCheckpointSaver`` keeping each thread in the state store;
- ``durable_graph`` (``graph.py``): registers a compiled graph (sync or ``async def`` nodes) as a
  durable function that runs one superstep per durable step, handing off between supersteps.
"""

from .graph import (
    RESUME_SIGNAL,
    GraphChangedError,
    UnstorableNodeResultError,
    durable_graph,
    has_async_nodes,
)
from .saver import OutlastSaver, thread_log_id

__all__ = [
    "RESUME_SIGNAL",
    "GraphChangedError",
    "OutlastSaver",
    "UnstorableNodeResultError",
    "durable_graph",
    "has_async_nodes",
    "thread_log_id",
]
