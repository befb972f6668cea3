"""The chaos driver: many runs at once on one backend, with faults, then the invariants.

One ``Driver`` owns a store wrapped in ``FaultyHotTier``/``FaultyColdTier`` and drives ``runs``
runs on a thread pool, so legs of different runs share this process (its journal cache, its store
handles). Per run, a ``random.Random`` seeded from (seed, run index) picks the workload and the
abuse: zombie legs, code changes, deletes and re-creates, refused requests. Thread scheduling is
not seeded, so a seed fixes every choice but not every interleaving.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from outlast import App, Budget
from outlast.journal_cache import JournalCache
from outlast.testing.store_faults import (
    FaultInjector,
    FaultRates,
    FaultyColdTier,
    FaultyHotTier,
    SimulatedKill,
)
from outlast.values import to_plain
from statestore import (
    BlobNotFoundError,
    RunRecord,
    RunStatus,
    StateStore,
    StateStoreError,
    StoreUnavailableError,
    codec,
    open_cold,
    open_hot,
)
from tests.chaos.invariants import Incarnation, check_incarnation
from tests.chaos.workload import BIG, PROBES, SIGNAL, ZombiePlan, blob, register, signal_payload
from tests.support.servers import RedisServer

T = TypeVar("T")
_DRIVERS = itertools.count()

DEFAULT_RATES = FaultRates(
    error_before=0.05, lost_reply=0.05, read_error=0.025, kill_before=0.01, kill_after=0.01
)


def seeded(*parts: object) -> random.Random:
    # Not random.Random("7/3"): string seeds that differ in one character give correlated
    # first draws. Hash them into an integer first.
    text = "/".join(str(p) for p in parts)
    return random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))


@dataclass
class ChaosConfig:
    backend: str
    seed: int
    runs: int
    workers: int = 6
    rates: FaultRates = DEFAULT_RATES
    quota_per_run: int = 10  # faults per run id; then it must finish on its own
    lease_ttl: float = 1.0
    zombie_ttl: float = 0.5
    leg_seconds: float = 6.0
    max_legs: int = 80
    max_wait: float = 30.0  # seconds one incarnation may wait on timers, leases and signals
    p_zombie: float = 0.12
    p_recreate: float = 0.15
    p_refused: float = 0.25
    p_evolve: float = 0.08
    p_async: float = 0.35  # the run is of the async twin of chaos_flow (drawn apart: see _plan)
    p_catch: float = 0.25
    p_burst: float = 0.15  # a burst of 150 uuids before a step
    burst: int = 150
    p_huge_burst: float = 0.005  # a burst past the SQLite/Redis atomic batch (10,000 entries)
    huge_burst: int = 10_050
    redis: RedisServer | None = None  # killed and restarted while the runs go on
    restart_every: float = 0.0


@dataclass
class Report:
    backend: str
    seed: int
    runs: int = 0
    incarnations: int = 0
    legs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    violations: list[tuple[str, str, str]] = field(default_factory=list)  # kind, run, detail
    redis_restarts: int = 0
    expired: int = 0
    reincarnated: int = 0
    refusals: int = 0
    elapsed: float = 0.0

    def violation_kinds(self) -> Counter[str]:
        return Counter(kind for kind, _, _ in self.violations)

    def summary(self) -> str:
        lines = [
            f"chaos {self.backend} seed={self.seed}: {self.runs} runs, {self.incarnations} "
            f"incarnations, {self.legs} legs, {sum(self.faults.values())} faults in "
            f"{self.elapsed:.1f}s; {self.refusals} refused requests, {self.expired} runs "
            f"expired, {self.reincarnated} ids reused after expiry",
            "  faults: " + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())),
            "  legs: " + ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items())),
            f"  violations: {len(self.violations)} "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.violation_kinds().items())),
        ]
        seen: Counter[str] = Counter()
        for kind, run, detail in self.violations:
            seen[kind] += 1
            if seen[kind] <= 3:
                lines.append(f"    [{kind}] {run}: {detail[:400]}")
        return "\n".join(lines)


class Reference:
    """Uninterrupted results: each input run once on a clean SQLite store, no faults."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.app = App(
            "chaos-ref",
            store=StateStore(
                open_hot(f"sqlite:///{root / 'ref.db'}?synchronous=normal"),
                open_cold(f"file://{root / 'cold'}?fsync=0"),
            ),
        )
        register(self.app)
        self.cache = JournalCache()
        self._results: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._n = 0

    def result(self, function: str, inp: dict[str, Any]) -> Any:
        key = f"{function}:{sorted(inp.items())}"
        with self._lock:
            if key in self._results:
                return self._results[key]
            self._n += 1
            run_id = f"ref-{self._n}"
            self.app.start(function, inp, run_id=run_id)
            self.app.signal(run_id, SIGNAL, signal_payload(inp["seed"]))
            for _ in range(100):
                outcome = self.app.run_leg(
                    run_id, cache=self.cache, on_context=lambda ctx: PROBES.tag(ctx, "ref|0")
                )
                record = self.app.store.hot.get_run(run_id)
                if record.status.terminal:
                    break
                if outcome.status == "skipped":
                    time.sleep(0.01)
            record = self.app.store.hot.get_run(run_id)
            if record.status is not RunStatus.SUCCEEDED:
                raise AssertionError(f"reference run of {function} {inp} ended {record.status}")
            value = self.app.store.run_result(record)
            self._results[key] = value
            return value

    def close(self) -> None:
        self.app.close()


@dataclass
class _Plan:
    function: str
    inputs: list[dict[str, Any]]  # one per incarnation
    zombie: bool
    refused: bool
    signal_early: bool


class Driver:
    def __init__(
        self,
        cfg: ChaosConfig,
        hot_url: str,
        cold_url: str,
        workdir: Path,
        *,
        hot_class: type[FaultyHotTier] = FaultyHotTier,
    ) -> None:
        self.cfg = cfg
        self.report = Report(backend=cfg.backend, seed=cfg.seed)
        self.injector = FaultInjector(cfg.seed, cfg.rates, quota_per_run=cfg.quota_per_run)
        self.hot = hot_class(open_hot(hot_url), self.injector)
        self.cold = FaultyColdTier(open_cold(cold_url), self.injector)
        self.store = StateStore(self.hot, self.cold)
        # Two deployments of one app on one store: v2 changed the body of "evolve".
        # Kills are injected on purpose, often at the same step: the cap on interrupted attempts
        # (a step longer than its leg) would turn them into failed runs. Store errors here are
        # transient, so they back off briefly and never block.
        opts: dict[str, Any] = {
            "inline_wait": 0.02,
            "max_interruptions": 1_000,
            "trouble_backoff": (0.001, 0.02),
        }
        self.app_v1 = App("chaos", store=self.store, **opts)
        self.app_v2 = App("chaos", store=self.store, **opts)
        register(self.app_v1, evolve_version=1)
        register(self.app_v2, evolve_version=2)
        self.reference = Reference(workdir / "reference")
        # Run ids (and the probes' keys) unique in this process: drivers of several backends
        # share the probes' registries.
        self.prefix = f"{cfg.backend[:2]}{cfg.seed}n{next(_DRIVERS)}"
        self._lock = threading.Lock()
        self._serial = 0
        self._stop = threading.Event()

    # ------------------------------------------------------------------ plumbing

    def _note(self, outcome: str) -> None:
        with self._lock:
            self.report.outcomes[outcome] += 1
            self.report.legs += 1

    def _violation(self, kind: str, run: str, detail: str) -> None:
        with self._lock:
            self.report.violations.append((kind, run, detail))

    def _who(self, run_key: str) -> str:
        with self._lock:
            self._serial += 1
            return f"{run_key}|{self._serial}"

    @contextmanager
    def quiet(self) -> Iterator[None]:
        with self.injector.scope("off"):
            yield

    def retry(self, fn: Callable[[], T], *, mode: str = "off", what: str = "") -> T:
        """Call ``fn`` until the store answers: faults are injected, and redis may be down."""
        deadline = time.monotonic() + 60
        while True:
            try:
                with self.injector.scope(mode):  # type: ignore[arg-type]
                    return fn()
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def read(self, run_id: str) -> RunRecord | None:
        return self.retry(lambda: self.hot.find_run(run_id))

    # ------------------------------------------------------------------ the whole thing

    def run(self) -> Report:
        started = time.monotonic()
        restarter = None
        if self.cfg.redis is not None and self.cfg.restart_every > 0:
            restarter = threading.Thread(target=self._restart_redis, daemon=True)
            restarter.start()
        try:
            with ThreadPoolExecutor(self.cfg.workers, thread_name_prefix="chaos-driver") as pool:
                for future in [pool.submit(self._drive_run, i) for i in range(self.cfg.runs)]:
                    future.result()
            self._expire_phase()
        finally:
            self._stop.set()
            if restarter is not None:
                restarter.join(timeout=30)
            self.report.elapsed = time.monotonic() - started
            for kind, n in self.injector.by_kind().items():
                self.report.faults[kind] += n
            self.reference.close()
            self.store.close()
        return self.report

    def _restart_redis(self) -> None:
        server = self.cfg.redis
        assert server is not None
        rng = seeded(self.cfg.seed, "redis")
        while not self._stop.wait(self.cfg.restart_every * rng.uniform(0.5, 1.5)):
            server.stop(signal.SIGKILL)
            time.sleep(rng.uniform(0.05, 0.4))
            server.start()
            with self._lock:
                self.report.redis_restarts += 1
                self.report.faults["redis_restart"] += 1

    # ------------------------------------------------------------------ one run id

    def _plan(self, rng: random.Random, index: int) -> _Plan:
        cfg = self.cfg
        evolve = rng.random() < cfg.p_evolve
        # From an rng of its own, so adding async runs left every other draw of a seed as it was.
        flow = (
            "achaos_flow"
            if seeded(cfg.seed, index, "async").random() < cfg.p_async
            else "chaos_flow"
        )
        incarnations = 2 if rng.random() < cfg.p_recreate else 1
        inputs: list[dict[str, Any]] = []
        for _ in range(incarnations):
            if evolve:
                inputs.append({"seed": rng.randrange(1000)})
                continue
            inputs.append(
                {
                    "seed": rng.randrange(1000),
                    "burst": (
                        cfg.huge_burst
                        if index == 1 or rng.random() < cfg.p_huge_burst
                        else cfg.burst
                        if rng.random() < cfg.p_burst
                        else rng.choice([0, 2, 12])
                    ),
                    "clock": rng.random() < 0.5,
                    "catch": rng.random() < cfg.p_catch,
                    "fail": rng.random() < 0.3,
                    "n_map": rng.choice([0, 0, 3, 6]),
                    "sleep": rng.random() < 0.3,
                    "signal": rng.random() < 0.3,
                }
            )
        return _Plan(
            function="evolve" if evolve else flow,
            inputs=inputs,
            zombie=rng.random() < cfg.p_zombie,
            refused=rng.random() < cfg.p_refused,
            signal_early=rng.random() < 0.5,
        )

    def _drive_run(self, index: int) -> None:
        rng = seeded(self.cfg.seed, index)
        run_id = f"{self.prefix}-{index}"
        plan = self._plan(rng, index)
        with self._lock:
            self.report.runs += 1
        if plan.refused:
            self._refused_unknown(run_id, rng)
        for number, inp in enumerate(plan.inputs):
            if number > 0:
                # Retention by hand: delete the ended run, then reuse its id for a new life.
                self.retry(lambda: self.hot.delete_run(run_id), mode="control")
                self.retry(lambda: self.cold.delete_run(run_id), mode="control")
            self._incarnation(run_id, number, plan, inp, rng)
            if plan.refused and number == len(plan.inputs) - 1:
                self._refused_ended(run_id, number, plan, inp, rng)

    def _incarnation(
        self, run_id: str, number: int, plan: _Plan, inp: dict[str, Any], rng: random.Random
    ) -> None:
        inc = Incarnation(
            run_id=run_id,
            run_key=f"{run_id}#{number}",
            function=plan.function,
            input=inp,
            expect="nondeterminism" if plan.function == "evolve" else "result",
        )
        if inc.expect == "result":
            inc.reference = self.reference.result(plan.function, inp)
        with self._lock:
            self.report.incarnations += 1
        try:
            self._drive_incarnation(inc, plan, rng)
        except Exception as exc:  # a driver failure is reported, not fatal
            self._violation("driver-error", run_id, f"{type(exc).__name__}: {exc}")
        self._check(inc)

    def _check(self, inc: Incarnation) -> None:
        try:
            found = self.retry(lambda: check_incarnation(self.store, inc))
        except Exception as exc:
            found = [("check-error", f"{type(exc).__name__}: {exc}")]
        for kind, detail in found:
            self._violation(kind, inc.run_key, detail)

    def _start(self, inc: Incarnation) -> None:
        self.retry(
            lambda: self.app_v1.start(inc.function, inc.input, run_id=inc.run_id), mode="control"
        )

    def _signal(self, inc: Incarnation) -> None:
        payload = signal_payload(inc.input["seed"])
        self.retry(lambda: self.app_v1.signal(inc.run_id, SIGNAL, payload), mode="control")

    def _drive_incarnation(self, inc: Incarnation, plan: _Plan, rng: random.Random) -> None:
        cfg = self.cfg
        self._start(inc)
        needs_signal = plan.function == "evolve" or bool(inc.input.get("signal"))
        signalled = False
        if needs_signal and plan.signal_early and plan.function != "evolve":
            self._signal(inc)
            signalled = True
        app = self.app_v1
        legs = 0
        waited = 0.0
        zombie_done = not plan.zombie
        pending: tuple[ZombiePlan, threading.Thread, dict[str, str]] | None = None
        try:
            while legs < cfg.max_legs and waited < cfg.max_wait:
                record = self.read(inc.run_id)
                if record is None:
                    self._violation("vanished", inc.run_key, "run record gone while driving")
                    return
                if record.status.terminal:
                    return
                now = self.hot.now()
                if needs_signal and not signalled and record.waiting_for == SIGNAL:
                    if plan.function == "evolve":
                        app = self.app_v2  # the new deployment takes over the waiting run
                    self._signal(inc)
                    signalled = True
                    continue
                if not record.runnable(now):
                    delay = 0.05
                    if record.lease is not None and record.lease.live(now):
                        delay = (record.lease.expires_at - now).total_seconds() + 0.01
                    elif record.wake_at is not None:
                        delay = (record.wake_at - now).total_seconds() + 0.01
                    delay = min(max(delay, 0.01), 1.0)
                    time.sleep(delay)
                    waited += delay
                    continue
                if not zombie_done:
                    zombie_done = True
                    legs += 1
                    pending = self._launch_zombie(app, inc)
                    continue
                status = self._leg(app, inc, self._who(inc.run_key))
                legs += 1
                if pending is not None:
                    self._finish_zombie(inc, pending)
                    pending = None
                if status == "skipped":
                    time.sleep(0.02)
                    waited += 0.02
        finally:
            if pending is not None:
                self._finish_zombie(inc, pending)

    # ------------------------------------------------------------------ legs

    def _leg(
        self,
        app: App,
        inc: Incarnation,
        who: str,
        *,
        lease_ttl: float | None = None,
        heartbeat: bool = True,
    ) -> str:
        ttl = lease_ttl or self.cfg.lease_ttl
        self.injector.revive(inc.run_id)
        status: str
        with self.injector.scope("leg"):
            try:
                outcome = app.run_leg(
                    inc.run_id,
                    budget=Budget.seconds(self.cfg.leg_seconds, margin=0.5),
                    lease_ttl=ttl,
                    heartbeat=ttl / 3 if heartbeat else None,
                    on_context=lambda ctx: PROBES.tag(ctx, who),
                )
                status = outcome.status
            except SimulatedKill:
                status = "killed"
            except StateStoreError as exc:
                status = f"raised:{type(exc).__name__}"
            except BaseException as exc:  # anything else out of a leg is a crash
                status = f"crash:{type(exc).__name__}"
                self._violation("leg-crashed", inc.run_key, f"{type(exc).__name__}: {exc}")
        # The dead leg has unwound (its map workers joined, its heartbeat stopped): the rest of
        # the world (the driver's own API calls) may talk about this run again.
        self.injector.revive(inc.run_id)
        self._note(status)
        if status == "completed":
            inc.completing_leg = who
        if status not in ("completed", "failed", "suspended", "handed_off", "skipped"):
            with self._lock:
                inc.interruptions += 1
        return status

    def _launch_zombie(
        self, app: App, inc: Incarnation
    ) -> tuple[ZombiePlan, threading.Thread, dict[str, str]] | None:
        """A leg without heartbeat that freezes in its first live step past its lease."""
        who = self._who(inc.run_key)
        zombie = ZombiePlan(who=who)
        with PROBES.lock:
            PROBES.zombies[inc.run_key] = zombie
        holder: dict[str, str] = {}

        def body() -> None:
            holder["status"] = self._leg(
                app, inc, who, lease_ttl=self.cfg.zombie_ttl, heartbeat=False
            )

        thread = threading.Thread(target=body, name="chaos-zombie", daemon=True)
        thread.start()
        while not zombie.paused.wait(0.02):
            if not thread.is_alive():
                break
        if zombie.paused.is_set():
            # Its interruption is counted when its leg ends (lease lost), before the checks.
            return zombie, thread, holder
        thread.join()
        with PROBES.lock:
            PROBES.zombies.pop(inc.run_key, None)
        return None

    def _finish_zombie(
        self, inc: Incarnation, pending: tuple[ZombiePlan, threading.Thread, dict[str, str]]
    ) -> None:
        zombie, thread, holder = pending
        zombie.resume.set()
        thread.join(timeout=60)
        with PROBES.lock:
            PROBES.zombies.pop(inc.run_key, None)
        status = holder.get("status", "still running")
        with self._lock:
            self.report.outcomes["zombie"] += 1
        if status in ("completed", "failed", "suspended", "handed_off", "still running"):
            self._violation(
                "zombie-went-on",
                inc.run_key,
                f"a leg frozen past its lease ended {status!r} after it was resumed "
                "(it must stop without writing)",
            )

    # ------------------------------------------------------------------ refused requests

    def _blob_exists(self, run_id: str, value: Any) -> bool:
        data = codec.encode(to_plain(value), compress_threshold=self.store.compress_threshold)
        digest = codec.content_hash(data)
        if (run_id, digest) in set(self.cold.put_log()):
            return True
        try:
            self.cold.inner._get(run_id, digest)
        except BlobNotFoundError:
            return False
        return True

    def _refuse(
        self, run_key: str, what: str, call: Callable[[], Any], blob_of: tuple[str, Any]
    ) -> None:
        with self._lock:
            self.report.refusals += 1
        try:
            self.retry(call)
        except StateStoreError:
            pass  # refused, as it should be
        else:
            self._violation("refusal-accepted", run_key, f"{what} was accepted")
        if self._blob_exists(*blob_of):
            self._violation(
                "blob-for-refused-request",
                run_key,
                f"{what} was refused but left a {blob_of[0]!r} blob in the cold tier",
            )

    def _refused_unknown(self, run_id: str, rng: random.Random) -> None:
        ghost = f"{run_id}-ghost"
        payload = {"nonce": rng.getrandbits(64), "pad": blob(f"ghost-{run_id}", BIG)}
        self._refuse(
            ghost,
            "a signal to an unknown run",
            lambda: self.app_v1.signal(ghost, SIGNAL, payload),
            (ghost, payload),
        )

    def _refused_ended(
        self, run_id: str, number: int, plan: _Plan, inp: dict[str, Any], rng: random.Random
    ) -> None:
        record = self.read(run_id)
        if record is None or not record.status.terminal:
            return
        run_key = f"{run_id}#{number}"
        payload = {"nonce": rng.getrandbits(64), "pad": blob(f"late-{run_id}", BIG)}
        self._refuse(
            run_key,
            "a signal to an ended run",
            lambda: self.app_v1.signal(run_id, SIGNAL, payload),
            (run_id, payload),
        )
        other = {**inp, "seed": inp["seed"] + 1, "pad": blob(f"c-{run_id}", BIG)}
        self._refuse(
            run_key,
            "a conflicting start (same id, other input)",
            lambda: self.app_v1.start(plan.function, other, run_id=run_id),
            (run_id, other),
        )

    # ------------------------------------------------------------------ retention

    def _expire_phase(self) -> None:
        """If the store expires ended runs: expire them all (with faults), check they are gone."""
        if not hasattr(self.store, "expire_runs") or not hasattr(self.hot, "expired_runs"):
            return
        # A retention on the wrapper only: the policy reads it, the backend indexes end times.
        self.hot.retention = timedelta(milliseconds=1)
        ids = {f"{self.prefix}-{i}" for i in range(self.cfg.runs)}
        before = sum(1 for run_id in ids if self.read(run_id) is not None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with self.injector.scope("control"):
                    done = self.store.expire_runs(limit=50)
            except StoreUnavailableError:
                time.sleep(0.02)
                continue
            if not done and not self.retry(lambda: self.hot.expired_runs(limit=1)):
                break
        after = 0
        for run_id in sorted(ids):
            record = self.read(run_id)
            after += record is not None
            if record is not None and record.status.terminal:
                self._violation("not-expired", run_id, f"ended run kept: {record.status.value}")
        self.report.expired = before - after
        # Ids freed by expiry are reused: the new lives must see nothing of the old ones (the
        # journal cache of this process still remembers them).
        self.hot.retention = None
        again = [
            i for i in range(self.cfg.runs) if seeded(self.cfg.seed, i, "again").random() < 0.2
        ]
        with ThreadPoolExecutor(self.cfg.workers, thread_name_prefix="chaos-driver") as pool:
            for future in [pool.submit(self._after_expiry, i) for i in again]:
                future.result()

    def _after_expiry(self, index: int) -> None:
        rng = seeded(self.cfg.seed, index, "after-expiry")
        plan = self._plan(rng, -1)
        if plan.function not in ("chaos_flow", "achaos_flow"):
            return  # the code-change case needs a fresh start on v1: not after expiry
        with self._lock:
            self.report.reincarnated += 1
        self._incarnation(f"{self.prefix}-{index}", 9, plan, plan.inputs[0], rng)
