"""Tools: plain Python functions with type hints, described to the model by a JSON schema.

The schema comes from a pydantic model built from the function's signature, and the same model
validates the arguments the model sends. A function that declares a parameter named ``step_key``
receives the durable step's idempotency key there; the model never sees that parameter.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast, get_type_hints, overload

import pydantic_core
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

STEP_KEY_PARAM = "step_key"

T = TypeVar("T")


class ToolDefinitionError(TypeError):
    """The function cannot be described to a model (missing hints, *args, a bad name...)."""


class ToolArgumentError(ValueError):
    """The model called a tool with arguments that do not fit its schema.

    ``errors`` lists ``(field, message)`` pairs; the text names the tool and every bad field, so it
    can be sent back to the model as is.
    """

    def __init__(self, tool: str, errors: list[tuple[str, str]]) -> None:
        self.tool = tool
        self.errors = errors
        detail = "; ".join(f"{field}: {message}" for field, message in errors)
        super().__init__(f"invalid arguments for tool {tool!r}: {detail}")


def to_text(value: Any) -> str:
    """Turn a tool's return value into text for the model: a str as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    # fallback=str keeps odd values (sets of paths, custom objects) readable instead of failing
    # the step after the tool already did its work.
    return pydantic_core.to_json(value, fallback=str).decode()


def _is_valid_name(name: str) -> bool:
    # Bedrock and OpenAI both accept tool names of [a-zA-Z0-9_-]{1,64}.
    return 0 < len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)


class Tool:
    """A function the model may call.

    ``name``, ``description`` and ``parameters`` (a JSON schema object) describe it to the model;
    ``validate`` checks arguments, ``call`` / ``acall`` run it and return text for the model.
    Calling the Tool object itself calls the plain function, so decorated functions stay usable.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        if not _is_valid_name(self.name):
            raise ToolDefinitionError(
                f"tool name {self.name!r} must be 1-64 characters of letters, digits, '_' or '-'"
            )
        self.description = description if description is not None else inspect.getdoc(fn) or ""
        self.is_async = inspect.iscoroutinefunction(fn)
        self.wants_step_key, self._arguments_model = self._build_arguments_model(fn)
        self.parameters: dict[str, Any] = self._arguments_model.model_json_schema()
        # The model's title is an internal class name; the model only needs the shape.
        self.parameters.pop("title", None)

    def _build_arguments_model(self, fn: Callable[..., Any]) -> tuple[bool, type[BaseModel]]:
        try:
            hints = get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: cannot resolve type hints: {exc}"
            ) from exc
        wants_step_key = False
        fields: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolDefinitionError(
                    f"tool {self.name!r}: *args and **kwargs cannot be described to a model"
                )
            if param.kind is param.POSITIONAL_ONLY:
                raise ToolDefinitionError(
                    f"tool {self.name!r}: positional-only parameter {param.name!r} cannot be "
                    "passed by name"
                )
            if param.name == STEP_KEY_PARAM:
                wants_step_key = True
                continue
            if param.name not in hints:
                raise ToolDefinitionError(
                    f"tool {self.name!r}: parameter {param.name!r} needs a type hint"
                )
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hints[param.name], default)
        model = create_model(
            f"{self.name}_arguments",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )
        return wants_step_key, cast(type[BaseModel], model)

    def spec(self) -> dict[str, Any]:
        """The provider-neutral description: name, description and parameters schema."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check and coerce ``arguments``; return the keyword arguments for the function."""
        if not isinstance(arguments, Mapping):
            raise ToolArgumentError(
                self.name, [("(arguments)", f"expected an object, got {type(arguments).__name__}")]
            )
        try:
            parsed = self._arguments_model.model_validate(dict(arguments))
        except ValidationError as exc:
            errors = [
                (".".join(str(part) for part in err["loc"]) or "(arguments)", err["msg"])
                for err in exc.errors()
            ]
            raise ToolArgumentError(self.name, errors) from None
        # Attribute access keeps nested models and other rich values as the function declared them.
        return {field: getattr(parsed, field) for field in type(parsed).model_fields}

    def _kwargs(self, arguments: Mapping[str, Any], step_key: str | None) -> dict[str, Any]:
        kwargs = self.validate(arguments)
        if self.wants_step_key:
            kwargs[STEP_KEY_PARAM] = step_key
        return kwargs

    def call(self, arguments: Mapping[str, Any], step_key: str | None = None) -> str:
        """Validate, run the function, and return its result as text.

        Raises ToolArgumentError for bad arguments; exceptions from the function propagate, and the
        agent loop decides how they reach the model.
        """
        kwargs = self._kwargs(arguments, step_key)
        if self.is_async:
            return to_text(asyncio.run(cast(Awaitable[Any], self.fn(**kwargs))))  # type: ignore[arg-type]
        return to_text(self.fn(**kwargs))

    async def acall(self, arguments: Mapping[str, Any], step_key: str | None = None) -> str:
        """Like ``call`` from async code; a sync function runs in a worker thread."""
        kwargs = self._kwargs(arguments, step_key)
        if self.is_async:
            return to_text(await cast(Awaitable[Any], self.fn(**kwargs)))
        return to_text(await asyncio.to_thread(self.fn, **kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a Tool of a function: ``@tool`` or ``@tool(name=..., description=...)``."""
    if fn is not None:
        return Tool(fn, name=name, description=description)

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(f, name=name, description=description)

    return wrap


def as_tools(items: Iterable[Tool | Callable[..., Any]]) -> list[Tool]:
    """Tools from Tool objects or plain functions; refuses two tools of one name."""
    tools = [item if isinstance(item, Tool) else Tool(item) for item in items]
    seen: set[str] = set()
    for t in tools:
        if t.name in seen:
            raise ToolDefinitionError(f"two tools are named {t.name!r}")
        seen.add(t.name)
    return tools
