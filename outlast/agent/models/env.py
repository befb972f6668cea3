"""Pick a model from the environment, so one agent runs on Bedrock or on OpenAI unchanged."""

from __future__ import annotations

import os
from collections.abc import Mapping

from outlast.agent.models.base import Model
from outlast.agent.models.bedrock import Bedrock
from outlast.agent.models.openai_chat import OpenAIChat

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
BEDROCK_ENV = "OUTLAST_BEDROCK_MODEL_ID"
OPENAI_ENV = "OPENAI_API_KEY"


class NoModelConfiguredError(RuntimeError):
    """The environment names no model and the caller gave no default."""


def model_from_env(env: Mapping[str, str] | None = None, *, default: Model | None = None) -> Model:
    """The model the environment asks for.

    - ``OUTLAST_BEDROCK_MODEL_ID`` set: Bedrock, in ``OUTLAST_BEDROCK_REGION`` or ``AWS_REGION``.
    - else ``OPENAI_API_KEY`` set: OpenAIChat with ``OUTLAST_OPENAI_MODEL`` (default
      gpt-4o-mini) at ``OPENAI_BASE_URL`` (default api.openai.com).
    - else ``default``; without one, ``NoModelConfiguredError``. There is no silent fallback:
      a deployment that lost its model setting must fail loudly, not answer with a test double.
      The offline demo and tests pass ``default=Offline()`` (``outlast.testing.offline_model``).
    """
    env = os.environ if env is None else env
    model_id = env.get(BEDROCK_ENV)
    if model_id:
        region = env.get("OUTLAST_BEDROCK_REGION") or env.get("AWS_REGION") or None
        return Bedrock(model_id, region=region)
    api_key = env.get(OPENAI_ENV)
    if api_key:
        return OpenAIChat(
            env.get("OUTLAST_OPENAI_MODEL") or DEFAULT_OPENAI_MODEL,
            base_url=env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
            api_key=api_key,
        )
    if default is not None:
        return default
    raise NoModelConfiguredError(
        f"no model configured: set {BEDROCK_ENV} (Bedrock, with OUTLAST_BEDROCK_REGION or "
        f"AWS_REGION) or {OPENAI_ENV} (an OpenAI-compatible endpoint, with OPENAI_BASE_URL and "
        "OUTLAST_OPENAI_MODEL), or pass model_from_env(default=...)"
    )
