"""LangGraph on Outlast: a checkpointer on the bi-tier store, and graphs run as durable functions.

- ``OutlastSaver`` (``saver.py``): a ``BaseCheckpointSaver`` keeping each thread in the state store;
- ``durable_graph`` (``graph.py``): registers a compiled graph as a durable function that runs
  one superstep per durable step, handing off between supersteps.
"""

from .graph import RESUME_SIGNAL, durable_graph
from .saver import OutlastSaver, thread_log_id

__all__ = ["RESUME_SIGNAL", "OutlastSaver", "durable_graph", "thread_log_id"]
