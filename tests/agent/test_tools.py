from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from outlast.agent.tools import (
    Tool,
    ToolArgumentError,
    ToolDefinitionError,
    as_tools,
    to_text,
    tool,
)


class Window(BaseModel):
    start: date
    end: date


@tool
def search(
    query: Annotated[str, Field(description="what to look for")],
    limit: int = 3,
    window: Window | None = None,
    step_key: str | None = None,
) -> list[dict[str, Any]]:
    """Search the corpus.

    Returns the best hits first.
    """
    return [{"query": query, "limit": limit, "window": window, "key": step_key}]


def test_schema_comes_from_the_signature_and_hides_step_key() -> None:
    assert search.name == "search"
    assert search.description == "Search the corpus.\n\nReturns the best hits first."
    schema = search.parameters
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"query", "limit", "window"}
    assert schema["required"] == ["query"]
    assert schema["properties"]["query"]["description"] == "what to look for"
    assert schema["properties"]["limit"] == {"default": 3, "title": "Limit", "type": "integer"}
    assert schema["additionalProperties"] is False
    assert "Window" in schema["$defs"]
    assert search.wants_step_key
    json.dumps(search.spec())  # the spec is plain JSON for any provider


def test_validate_coerces_and_keeps_declared_types() -> None:
    kwargs = search.validate(
        {"query": "lambda", "limit": "5", "window": {"start": "2024-01-01", "end": "2024-02-01"}}
    )
    assert kwargs["limit"] == 5
    assert kwargs["window"] == Window(start=date(2024, 1, 1), end=date(2024, 2, 1))
    assert "step_key" not in kwargs


def test_validate_names_the_tool_and_every_bad_field() -> None:
    with pytest.raises(ToolArgumentError) as caught:
        search.validate({"limit": "many", "window": {"start": "never"}, "step_key": "x"})
    err = caught.value
    assert err.tool == "search"
    fields = {field for field, _ in err.errors}
    assert fields == {"query", "limit", "window.start", "window.end", "step_key"}
    assert "'search'" in str(err) and "limit:" in str(err) and "window.start:" in str(err)


def test_validate_rejects_arguments_that_are_not_an_object() -> None:
    with pytest.raises(ToolArgumentError, match=r"\(arguments\): expected an object"):
        search.validate(["lambda"])  # type: ignore[arg-type]


def test_call_injects_the_step_key_and_returns_json_text() -> None:
    text = search.call({"query": "q"}, step_key="run-1:7")
    assert json.loads(text) == [{"query": "q", "limit": 3, "window": None, "key": "run-1:7"}]


def test_call_without_step_key_passes_none() -> None:
    assert json.loads(search.call({"query": "q"}))[0]["key"] is None


def test_tool_without_step_key_parameter_does_not_receive_it() -> None:
    @tool(name="echo-text", description="Echo.")
    def echo(text: str) -> str:
        return text

    assert echo.name == "echo-text"
    assert echo.description == "Echo."
    assert not echo.wants_step_key
    assert echo.call({"text": "as is"}, step_key="ignored") == "as is"
    assert echo("direct") == "direct"  # the decorated function stays callable


def test_exceptions_from_the_function_propagate() -> None:
    @tool
    def broken(x: int) -> int:
        raise RuntimeError(f"boom {x}")

    with pytest.raises(RuntimeError, match="boom 2"):
        broken.call({"x": 2})


def test_async_tools_run_from_sync_and_async_callers() -> None:
    @tool
    async def slow(x: int, step_key: str | None = None) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"x": x, "key": step_key}

    @tool
    def plain(x: int) -> int:
        return x * 2

    assert json.loads(slow.call({"x": 1}, step_key="k")) == {"x": 1, "key": "k"}

    async def both() -> tuple[str, str]:
        return await slow.acall({"x": 2}), await plain.acall({"x": 2})

    assert asyncio.run(both()) == ('{"x":2,"key":null}', "4")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        (3, "3"),
        (None, "null"),
        ({"a": [1, 2]}, '{"a":[1,2]}'),
        (
            Window(start=date(2024, 1, 1), end=date(2024, 1, 2)),
            '{"start":"2024-01-01","end":"2024-01-02"}',
        ),
        ({1, 2}, "[1,2]"),
    ],
)
def test_to_text(value: object, text: str) -> None:
    assert to_text(value) == text


def test_bad_definitions_are_refused() -> None:
    def no_hint(x):  # type: ignore[no-untyped-def]
        return x

    def star(*args: int) -> None: ...

    def named(x: int) -> None: ...

    with pytest.raises(ToolDefinitionError, match="'x' needs a type hint"):
        Tool(no_hint)
    with pytest.raises(ToolDefinitionError, match=r"\*args"):
        Tool(star)
    with pytest.raises(ToolDefinitionError, match="1-64 characters"):
        Tool(named, name="has space")
    with pytest.raises(ToolDefinitionError, match="two tools are named 'named'"):
        as_tools([named, Tool(named)])
