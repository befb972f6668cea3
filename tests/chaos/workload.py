"""The durable functions the chaos suite drives, and the probes they report through.

Every value a function returns is derived from its input, so the result of an uninterrupted run
(on a clean store, no faults) is the result every faulty run must reach. Deterministic reads
(uuids, clock, random) differ between runs, so the result carries only a digest of them; the
checker recomputes that digest from the run's own journal.

The probes are process-wide registries keyed by ``run_key`` (``run_id#incarnation``) and ``who``
(``run_key|leg``): the functions learn who they are through the ``Context`` the driver tags in
``on_context``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from outlast import NO_RETRY, App, AsyncContext, Context

BIG = 24_000  # characters: above the inline limit (4096) even compressed, so it goes cold
MEDIUM = 2_048  # above the compression threshold (1 KiB), still inline
SMALL = 64
SIGNAL = "go"
DET_NAMES = ("uuid", "now", "random")


def blob(key: str, size: int) -> str:
    """``size`` characters of hex, a pure function of ``key`` (compresses to about half)."""
    h = hashlib.sha256(key.encode()).digest()
    parts: list[str] = []
    total = 0
    while total < size:
        h = hashlib.sha256(h).digest()
        parts.append(h.hex())
        total += 64
    return "".join(parts)[:size]


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def det_token(name: str, value: Any) -> str:
    """How a deterministic read enters the result's digest (the same for live and journal)."""
    if name == "now":
        assert isinstance(value, datetime), type(value)
        return value.isoformat()
    if name == "random":
        return repr(float(value))
    return str(value)


def signal_payload(seed: int) -> dict[str, Any]:
    return {"seed": seed, "pad": blob(f"signal-{seed}", 6_000)}


# ---------------------------------------------------------------------- probes


@dataclass
class Observation:
    seq: int | None  # None for map items, found by name
    kind: str
    name: str
    value: Any


@dataclass
class ZombiePlan:
    """Pause the first live step body of leg ``who``: a SIGSTOP in the middle of a step."""

    who: str
    paused: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)


class Probes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tags: weakref.WeakKeyDictionary[Context | AsyncContext, str] = (
            weakref.WeakKeyDictionary()
        )
        self.observed: dict[str, list[Observation]] = {}
        self.executions: Counter[tuple[str, str]] = Counter()
        self.zombies: dict[str, ZombiePlan] = {}

    def tag(self, ctx: Context | AsyncContext, who: str) -> None:
        with self.lock:
            self.tags[ctx] = who

    def who(self, ctx: Context | AsyncContext) -> str:
        with self.lock:
            return self.tags.get(ctx, "untagged|0")

    def observe(self, who: str, obs: Observation) -> None:
        with self.lock:
            self.observed.setdefault(who, []).append(obs)

    def executed(self, who: str, name: str) -> None:
        run_key = who.split("|", maxsplit=1)[0]
        with self.lock:
            self.executions[(run_key, name)] += 1
            plan = self.zombies.get(run_key)
            pause = plan is not None and plan.who == who and not plan.paused.is_set()
            if pause:
                assert plan is not None
                plan.paused.set()
        if pause:
            assert plan is not None
            # Frozen past the lease: the driver runs another leg meanwhile, then lets this go on.
            plan.resume.wait(60)


PROBES = Probes()


# ---------------------------------------------------------------------- step bodies


def step_body(who: str, name: str, key: str, size: int) -> dict[str, Any]:
    PROBES.executed(who, name)
    return {"name": name, "data": blob(key, size)}


def failing_body(who: str, name: str, key: str) -> None:
    PROBES.executed(who, name)
    raise ValueError(f"deliberate failure {key}")


def map_item(item: tuple[str, int, str, int]) -> dict[str, Any]:
    who, index, key, size = item
    PROBES.executed(who, f"map_item[{index}]")
    return {"i": index, "data": blob(f"{key}-{index}", size)}


class Probe:
    """Wraps ctx calls: records what each call returned to user code, at which seq."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.who = PROBES.who(ctx)
        self.det: list[str] = []

    def _seen(self, seq: int | None, kind: str, name: str, value: Any) -> None:
        PROBES.observe(self.who, Observation(seq, kind, name, value))

    def step(self, name: str, key: str, size: int) -> dict[str, Any]:
        seq = self.ctx.seq
        value: dict[str, Any] = self.ctx.step(step_body, self.who, name, key, size, name=name)
        self._seen(seq, "step", name, value)
        return value

    def fail(self, name: str, key: str) -> None:
        self.ctx.step(failing_body, self.who, name, key, name=name, retry=NO_RETRY)

    def map(self, n: int, key: str) -> list[dict[str, Any]]:
        items = [(self.who, i, key, BIG if i % 2 == 0 else 512) for i in range(n)]
        values: list[dict[str, Any]] = self.ctx.map(map_item, items, max_concurrency=4)
        for i, value in enumerate(values):
            self._seen(None, "step", f"map_item[{i}]", value)
        return values

    def read(self, name: str) -> Any:
        seq = self.ctx.seq
        value: Any
        if name == "uuid":
            value = self.ctx.uuid()
        elif name == "now":
            value = self.ctx.now()
        else:
            value = self.ctx.random()
        self._seen(seq, "det", name, value)
        self.det.append(det_token(name, value))
        return value

    def signal(self, name: str) -> Any:
        seq = self.ctx.seq
        value = self.ctx.wait_for_signal(name)
        self._seen(seq, "signal", name, value)
        return value


# ---------------------------------------------------------------------- durable functions


def chaos_flow(ctx: Context, inp: dict[str, Any]) -> dict[str, Any]:
    p = Probe(ctx)
    k = f"s{inp['seed']}"
    out: list[Any] = [p.step("a", k + "a", SMALL)]
    for _ in range(inp["burst"]):
        p.read("uuid")
    if inp["clock"]:
        p.read("now")
        p.read("random")
    out.append(p.step("b", k + "b", MEDIUM))
    if inp["catch"]:
        # User code that catches everything around a step: store trouble must not end up here.
        try:
            out.append(p.step("c", k + "c", BIG))
        except Exception as exc:  # the point of the workload
            out.append({"caught": type(exc).__name__})
    else:
        out.append(p.step("c", k + "c", BIG))
    if inp["fail"]:
        try:
            p.fail("f", k + "f")
        except Exception as exc:  # a step's own failure, caught on purpose
            out.append({"failed": type(exc).__name__})
    if inp["n_map"]:
        out.append(p.map(inp["n_map"], k + "m"))
    if inp["sleep"]:
        ctx.sleep(0.05)
    if inp["signal"]:
        out.append(p.signal(SIGNAL))
    out.append(p.step("d", k + "d", SMALL))
    return {
        "digest": digest(out),
        "n_uuids": inp["burst"],
        "n_det": len(p.det),
        "det": digest(p.det),
    }


def evolve_v1(ctx: Context, inp: dict[str, Any]) -> dict[str, Any]:
    p = Probe(ctx)
    k = f"e{inp['seed']}"
    out = [p.step("a", k + "a", SMALL), p.step("b", k + "b", BIG)]
    out.append(p.signal(SIGNAL))
    out.append(p.step("d", k + "d", SMALL))
    return {"digest": digest(out), "version": 1}


def evolve_v2(ctx: Context, inp: dict[str, Any]) -> dict[str, Any]:
    # Deployed while v1 runs wait for their signal: step "b" became "b2". A v1 run must fail
    # with a non-determinism error, never finish with v2's result.
    p = Probe(ctx)
    k = f"e{inp['seed']}"
    out = [p.step("a", k + "a", SMALL), p.step("b2", k + "b", BIG)]
    out.append(p.signal(SIGNAL))
    out.append(p.step("d", k + "d", SMALL))
    return {"digest": digest(out), "version": 2}


# ---------------------------------------------------------------------- async durable function


async def astep_body(who: str, name: str, key: str, size: int) -> dict[str, Any]:
    PROBES.executed(who, name)  # a zombie's pause blocks the loop: SIGSTOP freezes it all
    await asyncio.sleep(0)
    return {"name": name, "data": blob(key, size)}


class AsyncProbe:
    """``Probe`` for an ``AsyncContext``. Concurrent operations get their seq when they commit,
    so steps are observed by name; deterministic reads and signals are checked through the
    result's digest (the reads are awaited one by one, so the journal keeps their order)."""

    def __init__(self, ctx: AsyncContext) -> None:
        self.ctx = ctx
        self.who = PROBES.who(ctx)
        self.det: list[str] = []

    async def step(self, name: str, key: str, size: int, *, body: Any = None) -> dict[str, Any]:
        value: dict[str, Any] = await self.ctx.step(
            body or step_body, self.who, name, key, size, name=name
        )
        PROBES.observe(self.who, Observation(None, "step", name, value))
        return value

    async def fail(self, name: str, key: str) -> None:
        await self.ctx.step(failing_body, self.who, name, key, name=name, retry=NO_RETRY)

    async def map(self, n: int, key: str) -> list[dict[str, Any]]:
        items = [(self.who, i, key, BIG if i % 2 == 0 else 512) for i in range(n)]
        values: list[dict[str, Any]] = await self.ctx.map(map_item, items, max_concurrency=4)
        for i, value in enumerate(values):
            PROBES.observe(self.who, Observation(None, "step", f"map_item[{i}]", value))
        return values

    async def read(self, name: str) -> Any:
        value: Any
        if name == "uuid":
            value = await self.ctx.uuid()
        elif name == "now":
            value = await self.ctx.now()
        else:
            value = await self.ctx.random()
        self.det.append(det_token(name, value))
        return value


async def achaos_flow(ctx: AsyncContext, inp: dict[str, Any]) -> dict[str, Any]:
    """``chaos_flow`` as an async function: "b" (an async body) and "c" (a sync body, in a
    thread) run concurrently through ``asyncio.gather``."""
    p = AsyncProbe(ctx)
    k = f"s{inp['seed']}"
    out: list[Any] = [await p.step("a", k + "a", SMALL)]
    for _ in range(inp["burst"]):
        await p.read("uuid")
    if inp["clock"]:
        await p.read("now")
        await p.read("random")

    async def c() -> Any:
        if not inp["catch"]:
            return await p.step("c", k + "c", BIG)
        try:
            return await p.step("c", k + "c", BIG)
        except Exception as exc:  # the point of the workload
            return {"caught": type(exc).__name__}

    out += await asyncio.gather(p.step("b", k + "b", MEDIUM, body=astep_body), c())
    if inp["fail"]:
        try:
            await p.fail("f", k + "f")
        except Exception as exc:  # a step's own failure, caught on purpose
            out.append({"failed": type(exc).__name__})
    if inp["n_map"]:
        out.append(await p.map(inp["n_map"], k + "m"))
    if inp["sleep"]:
        await ctx.sleep(0.05)
    if inp["signal"]:
        out.append(await ctx.wait_for_signal(SIGNAL))
    out.append(await p.step("d", k + "d", SMALL))
    return {
        "digest": digest(out),
        "n_uuids": inp["burst"],
        "n_det": len(p.det),
        "det": digest(p.det),
    }


def register(app: App, *, evolve_version: int = 1) -> None:
    app.durable("chaos_flow")(chaos_flow)
    app.durable("achaos_flow")(achaos_flow)
    app.durable("evolve")(evolve_v1 if evolve_version == 1 else evolve_v2)
