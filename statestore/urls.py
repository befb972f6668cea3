"""Opening stores from URLs (the schemes of DESIGN.md) and from the environment."""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from statestore.cold import ColdTier
from statestore.errors import InvalidStoreUrlError
from statestore.hot import HotTier
from statestore.routing import StateStore

HOT_ENV = "OUTLAST_HOT_URL"
COLD_ENV = "OUTLAST_COLD_URL"
DEFAULT_HOT_URL = "sqlite:///.outlast/hot.db"
DEFAULT_COLD_URL = "file://.outlast/cold"

HOT_SCHEMES = (
    "sqlite:///PATH",
    "redis://HOST:PORT/DB?prefix=P",
    "dynamodb://TABLE?region=R&endpoint_url=U",
    "memory://NAME",
)
# Every hot scheme also takes ?retention_days=N (ended runs are deleted N days after they end,
# by StateStore.expire_runs) and ?inline_limit=BYTES.
COLD_SCHEMES = ("file://PATH", "s3://BUCKET/PREFIX?region=R&endpoint_url=U", "memory://NAME")

# memory:// stores are shared by name within a process, so an App and a test can meet in one.
_memory_hot: dict[str, HotTier] = {}
_memory_cold: dict[str, ColdTier] = {}


def _query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def _int_option(options: dict[str, str], name: str, url: str) -> int | None:
    if name not in options:
        return None
    try:
        return int(options[name])
    except ValueError:
        raise InvalidStoreUrlError(
            f"{name}={options[name]!r} in {url!r} is not an integer"
        ) from None


def _retention_option(options: dict[str, str], url: str) -> timedelta | None:
    """``retention_days`` as a timedelta: a finite number of days above zero."""
    if "retention_days" not in options:
        return None
    text = options["retention_days"]
    try:
        days = float(text)
        if not (math.isfinite(days) and days > 0):
            raise ValueError(text)
        return timedelta(days=days)
    except (ValueError, OverflowError):
        raise InvalidStoreUrlError(
            f"retention_days={text!r} in {url!r} is not a number of days above zero "
            "(write retention_days=30, or leave it out to keep ended runs forever)"
        ) from None


def _bad(url: str, kind: str, accepted: tuple[str, ...], why: str) -> InvalidStoreUrlError:
    return InvalidStoreUrlError(
        f"cannot open {kind}-tier URL {url!r}: {why}; accepted: " + ", ".join(accepted)
    )


def open_hot(url: str | None = None, **kwargs: Any) -> HotTier:
    """Open a hot tier. ``url`` defaults to ``$OUTLAST_HOT_URL``, then ``sqlite:///.outlast/hot.db``."""
    url = url or os.environ.get(HOT_ENV) or DEFAULT_HOT_URL
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise _bad(url, "hot", HOT_SCHEMES, "no scheme")
    options = _query(url)
    inline = _int_option(options, "inline_limit", url)
    if inline is not None:
        kwargs.setdefault("inline_limit", inline)
    retention = _retention_option(options, url)
    if retention is not None:
        kwargs.setdefault("retention", retention)
    path_part = rest.split("?", 1)[0]
    if scheme == "memory":
        from statestore.backends.memory import MemoryHotTier

        return _memory_hot.setdefault(path_part or "default", MemoryHotTier(**kwargs))
    if scheme == "sqlite":
        from statestore.backends.sqlite import SqliteHotTier

        if not path_part.startswith("/") or path_part == "/":
            raise _bad(
                url, "hot", HOT_SCHEMES, "write sqlite:///relative/path or sqlite:////abs/path"
            )
        if "synchronous" in options:
            kwargs.setdefault("synchronous", options["synchronous"].upper())
        return SqliteHotTier(path_part[1:], **kwargs)
    if scheme in ("redis", "rediss", "unix"):
        from statestore.backends.redis import RedisHotTier

        if "prefix" in options:
            kwargs.setdefault("prefix", options["prefix"])
        return RedisHotTier(url.split("?", 1)[0], **kwargs)
    if scheme == "dynamodb":
        from statestore.backends.dynamodb import DynamoHotTier

        table = path_part.strip("/")
        if not table:
            raise _bad(url, "hot", HOT_SCHEMES, "no table name")
        return DynamoHotTier(
            table,
            region=options.get("region"),
            endpoint_url=options.get("endpoint_url"),
            create=options.get("create", "") in ("1", "true", "yes"),
            **kwargs,
        )
    raise _bad(url, "hot", HOT_SCHEMES, f"unknown scheme {scheme!r}")


def open_cold(url: str | None = None, **kwargs: Any) -> ColdTier:
    """Open a cold tier. ``url`` defaults to ``$OUTLAST_COLD_URL``, then ``file://.outlast/cold``."""
    url = url or os.environ.get(COLD_ENV) or DEFAULT_COLD_URL
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise _bad(url, "cold", COLD_SCHEMES, "no scheme")
    options = _query(url)
    path_part = rest.split("?", 1)[0]
    if scheme == "memory":
        from statestore.backends.memory import MemoryColdTier

        return _memory_cold.setdefault(path_part or "default", MemoryColdTier())
    if scheme == "file":
        from statestore.backends.fs import FsColdTier

        if not path_part:
            raise _bad(url, "cold", COLD_SCHEMES, "no directory")
        return FsColdTier(
            path_part, fsync=options.get("fsync", "1") not in ("0", "false"), **kwargs
        )
    if scheme == "s3":
        from statestore.backends.s3 import S3ColdTier

        bucket, _, prefix = path_part.partition("/")
        if not bucket:
            raise _bad(url, "cold", COLD_SCHEMES, "no bucket")
        return S3ColdTier(
            bucket,
            prefix=prefix.strip("/"),
            region=options.get("region"),
            endpoint_url=options.get("endpoint_url"),
            create=options.get("create", "") in ("1", "true", "yes"),
            **kwargs,
        )
    raise _bad(url, "cold", COLD_SCHEMES, f"unknown scheme {scheme!r}")


def open_store(hot_url: str | None = None, cold_url: str | None = None) -> StateStore:
    """Open both tiers (from the URLs, else the environment, else the embedded defaults)."""
    return StateStore(open_hot(hot_url), open_cold(cold_url))
