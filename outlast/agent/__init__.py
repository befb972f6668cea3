"""The agent layer: conversation messages, tools, and model adapters.

Messages, tools and models are pure: they know nothing of the durable runtime. The agent loop
(``Agent``) builds on them, running each model call and each tool call as a durable step.
"""

from outlast.agent.loop import DEFAULT_MODEL_RETRY, Agent, AgentResult, AgentStop
from outlast.agent.messages import Message, ModelReply, ToolCall, ToolResult, Usage
from outlast.agent.models import (
    Bedrock,
    Model,
    ModelError,
    ModelRequestError,
    ModelServerError,
    ModelThrottledError,
    NoModelConfiguredError,
    OpenAIChat,
    model_from_env,
)
from outlast.agent.tools import (
    Tool,
    ToolArgumentError,
    ToolDefinitionError,
    as_tools,
    to_text,
    tool,
)

__all__ = [
    "DEFAULT_MODEL_RETRY",
    "Agent",
    "AgentResult",
    "AgentStop",
    "Bedrock",
    "Message",
    "Model",
    "ModelError",
    "ModelReply",
    "ModelRequestError",
    "ModelServerError",
    "ModelThrottledError",
    "NoModelConfiguredError",
    "OpenAIChat",
    "Tool",
    "ToolArgumentError",
    "ToolCall",
    "ToolDefinitionError",
    "ToolResult",
    "Usage",
    "as_tools",
    "model_from_env",
    "to_text",
    "tool",
]
