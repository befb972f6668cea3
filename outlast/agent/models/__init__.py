"""Model adapters: Bedrock (Converse), OpenAI-compatible chat completions, and the offline model."""

from outlast.agent.models.base import (
    Model,
    ModelError,
    ModelRequestError,
    ModelServerError,
    ModelThrottledError,
)
from outlast.agent.models.bedrock import Bedrock
from outlast.agent.models.env import model_from_env
from outlast.agent.models.offline import Offline
from outlast.agent.models.openai_chat import OpenAIChat

__all__ = [
    "Bedrock",
    "Model",
    "ModelError",
    "ModelRequestError",
    "ModelServerError",
    "ModelThrottledError",
    "Offline",
    "OpenAIChat",
    "model_from_env",
]
