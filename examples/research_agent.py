"""A research agent: it searches a small bundled corpus, reads, takes notes, writes a cited report.

Run it through the local emulator, with evictions and kills switched on::

    outlast run examples/research_agent.py:research --input '"durable agents"' \\
        --leg-timeout 3 --evict-rate 0.3 --kill-rate 0.2 --seed 7
    outlast runs show RUN_ID      # tokens, legs, and the restart tax it did not pay

The model is the one the environment names (see ``model_from_env``): ``OUTLAST_BEDROCK_MODEL_ID``
for Bedrock, ``OPENAI_API_KEY`` (and ``OPENAI_BASE_URL``, ``OUTLAST_OPENAI_MODEL``) for an
OpenAI-compatible endpoint. Without either, this example chooses the offline model (a test double
from ``outlast.testing``) so ``make demo`` runs anywhere; it says so in every answer. The tools
sleep a few milliseconds, as real ones take time, so the emulator's kills land in the middle of
the run.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

from outlast import App, Context
from outlast.agent import Agent, Message, Model, ModelReply, Tool, model_from_env, tool
from outlast.testing.offline_model import Offline

CORPUS = Path(__file__).resolve().parent / "corpus"
# Only /tmp is writable on Lambda, so that is where notes go there unless told otherwise.
NOTES_DIR = Path(
    os.environ.get("OUTLAST_NOTES_DIR")
    or (
        str(Path(tempfile.gettempdir()) / "outlast-notes")
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        else ".outlast/notes"
    )
)

SYSTEM = """You are a careful researcher. Use the tools: `search` the corpus, `read` the most
relevant documents, and `note` each finding with the id of the document it came from. When you
have enough, write a short report in which every claim cites its source as [doc-id], and end with
the list of sources."""

# The work each call takes, in seconds: small, but enough for the run to span a few legs and for
# the emulator's kills to land mid-run. The offline model answers at once; a remote one does not.
# OUTLAST_EXAMPLE_PACE scales these (e.g. 4: a slower offline model and tools), so a local run can
# be made to span more legs without changing the agent.
_PACE = float(os.environ.get("OUTLAST_EXAMPLE_PACE", "1") or 1)
SEARCH_S, READ_S, NOTE_S, OFFLINE_THINK_S = (s * _PACE for s in (0.2, 0.1, 0.05, 0.1))


@cache
def corpus() -> dict[str, tuple[str, str]]:
    """Document id (the file's stem) -> (title, body)."""
    docs: dict[str, tuple[str, str]] = {}
    for path in sorted(CORPUS.glob("*.md")):
        text = path.read_text(encoding="utf-8").strip()
        first, _, body = text.partition("\n")
        docs[path.stem] = (first.lstrip("# ").strip(), " ".join(body.split()))
    return docs


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2]


@tool
def search(query: str, limit: int = 5) -> list[dict[str, str]]:
    """Search the corpus. Returns up to `limit` documents (id, title, snippet), best first."""
    time.sleep(SEARCH_S)
    wanted = set(_words(query))
    scored: list[tuple[int, str]] = []
    for doc_id, (title, body) in corpus().items():
        title_words, body_words = _words(title), _words(body)
        score = 3 * sum(w in wanted for w in title_words) + sum(w in wanted for w in body_words)
        if score:
            scored.append((score, doc_id))
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [
        {"id": doc_id, "title": corpus()[doc_id][0], "snippet": corpus()[doc_id][1][:160]}
        for _, doc_id in scored[: max(1, min(limit, 10))]
    ]


@tool
def read(doc_id: str) -> dict[str, str]:
    """Read one document of the corpus by its id."""
    time.sleep(READ_S)
    if doc_id not in corpus():
        raise KeyError(f"no document {doc_id!r}; search first and use an id it returns")
    title, body = corpus()[doc_id]
    return {"id": doc_id, "title": title, "text": body}


@tool
def note(text: str, source: str, step_key: str) -> str:
    """Write down one finding and the id of the document it comes from."""
    time.sleep(NOTE_S)
    # The step key is the same on every attempt of this call, so a repeat after a crash rewrites
    # the same file instead of adding a second copy of the note.
    run_id = step_key.split(":", 1)[0]
    folder = NOTES_DIR / run_id
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(step_key.encode()).hexdigest()[:16]
    (folder / f"{name}.md").write_text(f"- {text} [{source}]\n", encoding="utf-8")
    return f"noted (from [{source}])"


class Paced:
    """A model that takes ``seconds`` to answer, like a remote one."""

    def __init__(self, model: Model, seconds: float) -> None:
        self.model = model
        self.name = model.name
        self.seconds = seconds

    def complete(self, system: str, messages: list[Message], tools: list[Tool]) -> ModelReply:
        time.sleep(self.seconds)
        return self.model.complete(system, messages, tools)


def pick_model() -> Model:
    model = model_from_env(default=Offline())
    return Paced(model, OFFLINE_THINK_S) if isinstance(model, Offline) else model


app = App("research-agent")
agent = Agent(
    pick_model(),
    [search, read, note],
    system=SYSTEM,
    max_turns=40,
)


@app.durable()
def research(ctx: Context, topic: str) -> dict[str, Any]:
    """Research ``topic`` in the bundled corpus and return a cited report."""
    result = agent.run(ctx, f"Research {topic} and write a cited report.")
    cited = sorted(set(re.findall(r"\[([\w.-]+)\]", result.answer)) & set(corpus()))
    return {
        "topic": topic,
        "report": result.answer,
        "sources": cited,
        "stop": result.stop,
        "turns": result.turns,
        "model": result.model,
        "usage": result.usage.model_dump(),
    }
