"""Step results as plain values, and back to the types the code declared.

A step's result is stored as plain msgpack values. Pydantic models (also inside lists and dicts)
become their JSON-mode dumps; on the way back the step function's return annotation rebuilds them.
The same conversion runs live and on replay, so code sees equal values in both.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError


def to_plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


@lru_cache(maxsize=1024)
def _adapter_for(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations just mean "no rebuilding"
        return None
    annotation = hints.get("return", inspect.Signature.empty)
    if annotation in (inspect.Signature.empty, Any, object, None, type(None)):
        return None
    try:
        return TypeAdapter(annotation)
    except Exception:  # noqa: BLE001 - an annotation pydantic cannot model is left alone
        return None


def rebuild(fn: Callable[..., Any], plain: Any) -> Any:
    """Rebuild ``plain`` as ``fn``'s declared return type, when pydantic can."""
    target = getattr(fn, "__func__", fn)
    try:
        adapter = _adapter_for(target)
    except TypeError:  # unhashable callables (some partials) are not cached
        adapter = None
    if adapter is None:
        return plain
    try:
        return adapter.validate_python(plain)
    except ValidationError:
        return plain
