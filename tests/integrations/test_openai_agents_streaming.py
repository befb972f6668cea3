"""``OutlastRunner.run_streamed``: the SDK's streamed run, durable.

The agents of ``openai_agents_app.py`` stream from the scripted model's ``stream_response`` (text
deltas word by word, ``output_item.done`` events, then ``response.completed``). A live model call's
events stream through while its completed response is journaled; a replayed call delivers the
journaled response as one ``response.completed`` event, without calling the model.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from outlast.app import DurableFunction
from outlast.integrations.openai_agents import OutlastRunner
from outlast.targets import load_target
from statestore import RunStatus
from tests.integrations.test_openai_agents import (
    APP,
    EXPECTED_NAMES,
    QUESTION,
    chaos,
    model_calls,
)

MODEL_TURNS = 4  # three triage turns (two with tools, one handing off), one writer turn


@pytest.fixture
def durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DurableFunction[Any]]:
    monkeypatch.setenv("OUTLAST_HOT_URL", f"sqlite:///{tmp_path}/hot.db")
    monkeypatch.setenv("OUTLAST_COLD_URL", f"file://{tmp_path}/cold")
    monkeypatch.setenv("OA_CALL_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("OA_MODEL_SECONDS", "0")
    monkeypatch.setenv("OA_TOOL_SECONDS", "0")
    function = load_target(f"{APP}:assist_streamed")
    function.app.close()  # the module is shared between tests; open this test's store
    yield function
    function.app.close()


def streamed_text(durable: DurableFunction[Any]) -> str:
    """The text deltas the last streamed run saw (the app keeps them)."""
    return "".join(sys.modules[durable.fn.__module__].STREAMED_TEXT)


def test_a_streamed_run_streams_live_and_journals_what_run_journals(
    durable: DurableFunction[Any], tmp_path: Path
) -> None:
    app = durable.app
    plain = app.drive(app.start("assist", QUESTION, run_id="plain"))
    log = tmp_path / "calls.log"
    log.unlink()
    view = app.drive(app.start("assist_streamed", QUESTION, run_id="streamed"))
    assert view.status is RunStatus.SUCCEEDED, view.error
    result = dict(view.result)
    # One response.completed per model turn reached the stream...
    assert result.pop("completed_events") == MODEL_TURNS
    # ...and the run's output, items and usage are those of the same run made with run().
    assert result == plain.result
    # The writer's answer came through the stream word by word while the model produced it.
    assert streamed_text(durable) == result["output"] + " "
    assert [e.name for e in app.journal("streamed")] == EXPECTED_NAMES
    assert model_calls(log) == Counter(
        {("triage", 0): 1, ("triage", 1): 1, ("triage", 2): 1, ("writer", 0): 1}
    )


@pytest.mark.parametrize(
    ("cut", "live_calls"),
    [
        # Cut just before the writer's model step: only the writer is called, and streams.
        (9, Counter({("writer", 0): 1})),
        # Cut after it: every model call is replayed, nothing is called or streamed live.
        (10, Counter()),
    ],
)
def test_a_replayed_streamed_call_is_delivered_from_the_journal(
    durable: DurableFunction[Any], tmp_path: Path, cut: int, live_calls: Counter[Any]
) -> None:
    app = durable.app
    log = tmp_path / "calls.log"
    done = app.drive(app.start("assist_streamed", QUESTION, run_id="first"))
    assert done.status is RunStatus.SUCCEEDED, done.error
    log.unlink()
    fork = app.retry("first", from_seq=cut, as_id=f"fork-{cut}")
    view = app.drive(fork)
    assert view.status is RunStatus.SUCCEEDED, view.error
    # The same result, usage and number of completed responses, live or replayed.
    assert view.result == done.result
    assert model_calls(log) == live_calls
    expected_text = done.result["output"] + " " if live_calls else ""
    assert streamed_text(durable) == expected_text
    assert [e.name for e in app.journal(fork)] == EXPECTED_NAMES


@pytest.mark.slow
def test_a_streamed_run_under_faults_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    """Evictions, kills and duplicate deliveries through ``outlast run``: the same output, usage
    and completed responses as an uninterrupted streamed run; the model streamed at most once
    per turn plus once per interruption (``chaos`` asserts it, printing the seed)."""
    try:
        tiers = (f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold")
        chaos(tmp_path, tiers, 6, "assist_streamed", tool_turns=2, model_seconds="0.4")
    except AssertionError as exc:  # the seed is in chaos's messages; the function here
        raise AssertionError(f"assist_streamed: {exc}") from None


def test_run_streamed_needs_an_async_context(durable: DurableFunction[Any]) -> None:
    triage = sys.modules[durable.fn.__module__].triage
    with pytest.raises(TypeError, match="AsyncContext"):
        OutlastRunner.run_streamed(object(), triage, QUESTION)  # type: ignore[arg-type]
