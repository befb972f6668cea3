"""Adapters that make other frameworks' agents durable on Outlast.

Each adapter is its own module behind an optional extra (``pip install 'outlast[openai-agents]'``)
and is imported by name (``outlast.integrations.openai_agents``): this package imports nothing,
so the core never pulls a framework in.
"""
