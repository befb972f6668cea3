"""A boto3 client as the AWS-backed tiers want it: standard retries, bounded timeouts, and a
clear ``StoreUnavailableError`` (naming what it was for) when it cannot be set up."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from statestore.errors import StoreUnavailableError


def aws_client(
    service: str,
    *,
    purpose: str,
    region: str | None,
    endpoint_url: str | None,
    max_attempts: int,
    connect_timeout: float,
    read_timeout: float,
    **config: Any,
) -> Any:
    """``purpose`` completes "cannot set up a <service> client for ..." in the error."""
    settings = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        **config,
    )
    try:
        return boto3.client(service, region_name=region, endpoint_url=endpoint_url, config=settings)
    except BotoCoreError as exc:
        raise StoreUnavailableError(
            f"cannot set up a {service} client for {purpose}: {exc} "
            "(set ?region=... in the URL or AWS_REGION)"
        ) from exc
