"""Model adapters: Bedrock (Converse) and OpenAI-compatible chat completions.

The offline (scripted) model is a test double: ``outlast.testing.offline_model.Offline``.
"""

from outlast.agent.models.base import (
    Model,
    ModelError,
    ModelRequestError,
    ModelServerError,
    ModelThrottledError,
)
from outlast.agent.models.bedrock import Bedrock
from outlast.agent.models.env import NoModelConfiguredError, model_from_env
from outlast.agent.models.openai_chat import OpenAIChat

__all__ = [
    "Bedrock",
    "Model",
    "ModelError",
    "ModelRequestError",
    "ModelServerError",
    "ModelThrottledError",
    "NoModelConfiguredError",
    "OpenAIChat",
    "model_from_env",
]
