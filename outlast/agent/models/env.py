"""Pick a model from the environment, so one example runs offline, on Bedrock or on OpenAI."""

from __future__ import annotations

import os
from collections.abc import Mapping

from outlast.agent.models.base import Model
from outlast.agent.models.bedrock import Bedrock
from outlast.agent.models.offline import Offline
from outlast.agent.models.openai_chat import OpenAIChat

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def model_from_env(env: Mapping[str, str] | None = None, *, default: Model | None = None) -> Model:
    """The model the environment asks for.

    - ``OUTLAST_BEDROCK_MODEL_ID`` set: Bedrock, in ``OUTLAST_BEDROCK_REGION`` or ``AWS_REGION``.
    - else ``OPENAI_API_KEY`` set: OpenAIChat with ``OUTLAST_OPENAI_MODEL`` (default
      gpt-4o-mini) at ``OPENAI_BASE_URL`` (default api.openai.com).
    - else ``default``, or ``Offline()``.
    """
    env = os.environ if env is None else env
    model_id = env.get("OUTLAST_BEDROCK_MODEL_ID")
    if model_id:
        region = env.get("OUTLAST_BEDROCK_REGION") or env.get("AWS_REGION") or None
        return Bedrock(model_id, region=region)
    api_key = env.get("OPENAI_API_KEY")
    if api_key:
        return OpenAIChat(
            env.get("OUTLAST_OPENAI_MODEL") or DEFAULT_OPENAI_MODEL,
            base_url=env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
            api_key=api_key,
        )
    return default if default is not None else Offline()
