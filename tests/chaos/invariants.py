"""What must hold after every run, however it was interrupted.

Each check returns violations as ``(kind, detail)`` pairs; the driver attaches the run and seed.
The checks read the store with faults off (``FaultInjector.scope("off")``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from outlast.values import to_plain
from statestore import EntryKind, EntryStatus, JournalEntry, RunRecord, RunStatus, StateStore
from tests.chaos.workload import DET_NAMES, PROBES, Observation, det_token, digest

Violation = tuple[str, str]


@dataclass
class Incarnation:
    """One life of a run id, as the driver drove it."""

    run_id: str
    run_key: str
    function: str
    input: dict[str, Any]
    expect: str  # "result": must equal the reference; "nondeterminism": must fail so
    reference: Any = None
    interruptions: int = 0  # legs that ended abnormally (killed, store error, lease lost, zombie)
    completing_leg: str | None = None  # ``who`` of the leg whose outcome was "completed"


def check_incarnation(store: StateStore, inc: Incarnation) -> list[Violation]:
    out: list[Violation] = []
    record = store.hot.find_run(inc.run_id)
    if record is None:
        return [("vanished", "the run record is gone")]
    if record.status is RunStatus.BLOCKED:
        if record.error is None:
            out.append(("blocked-without-reason", stuck_detail(store, record)))
    elif not record.status.terminal:
        out.append(("stuck", stuck_detail(store, record)))
    try:
        journal = store.hot.read_journal(inc.run_id)
    except Exception as exc:  # any failure to read the journal is the finding
        return [*out, ("journal-unreadable", f"{type(exc).__name__}: {exc}")]
    out += check_journal(record, journal)
    values = decode_all(store, inc.run_id, journal, out)
    if record.status.terminal:
        out += check_outcome(store, inc, record, journal, values)
    out += check_observations(inc, journal, values)
    out += check_side_effects(inc, journal)
    return out


def stuck_detail(store: StateStore, record: RunRecord) -> str:
    now = store.hot.now()
    lease = record.lease
    return (
        f"status={record.status.value} next_seq={record.next_seq} "
        f"lease={'none' if lease is None else f'token {lease.token} live={lease.live(now)}'} "
        f"wake_at={record.wake_at} waiting_for={record.waiting_for} "
        f"due={record.due_at() is not None and record.due_at() <= now} "  # type: ignore[operator]
        f"runnable={record.runnable(now)}"
    )


def check_journal(record: RunRecord, journal: list[JournalEntry]) -> list[Violation]:
    out: list[Violation] = []
    seqs = [e.seq for e in journal]
    if seqs != list(range(len(journal))):
        out.append(("journal-not-dense", f"seqs {seqs[:20]}..."))
    if len(journal) != record.next_seq:
        out.append(
            (
                "journal-length",
                f"{len(journal)} entries but the record says next_seq {record.next_seq}",
            )
        )
    ended = Counter(
        e.name for e in journal if e.kind is EntryKind.STEP and e.status is not EntryStatus.RETRY
    )
    for name, n in ended.items():
        if n > 1:
            out.append(("step-committed-twice", f"step {name!r} ended {n} times in the journal"))
    last_leg = 0
    for entry in journal:
        if entry.leg == 0:
            continue  # signal entries carry no leg
        if entry.leg < last_leg:
            out.append(
                (
                    "stale-leg-committed",
                    f"seq {entry.seq} ({entry.kind.value} {entry.name!r}) was committed by leg "
                    f"{entry.leg} after leg {last_leg} had committed: a fenced-out leg wrote",
                )
            )
        last_leg = max(last_leg, entry.leg)
    return out


def decode_all(
    store: StateStore, run_id: str, journal: list[JournalEntry], out: list[Violation]
) -> dict[int, Any]:
    values: dict[int, Any] = {}
    for entry in journal:
        if entry.value is None:
            continue
        try:
            values[entry.seq] = store.decode(run_id, entry.value, seq=entry.seq)
        except Exception as exc:  # an undecodable committed value is the finding
            out.append(("value-unreadable", f"seq {entry.seq}: {type(exc).__name__}: {exc}"))
    return values


def journal_det_digest(journal: list[JournalEntry], values: dict[int, Any]) -> tuple[int, str]:
    tokens = [
        det_token(e.name, values.get(e.seq))
        for e in journal
        if e.kind in (EntryKind.RANDOM, EntryKind.CLOCK) and e.name in DET_NAMES
    ]
    return len(tokens), digest(tokens)


def check_outcome(
    store: StateStore,
    inc: Incarnation,
    record: RunRecord,
    journal: list[JournalEntry],
    values: dict[int, Any],
) -> list[Violation]:
    error = f"{record.error.type}: {record.error.message[:300]}" if record.error else ""
    if inc.expect == "nondeterminism":
        if record.status is RunStatus.SUCCEEDED:
            result = store.run_result(record)
            return [("changed-code-succeeded", f"run of changed code succeeded with {result!r}")]
        if record.error is None or "NonDeterminism" not in record.error.type:
            return [("changed-code-wrong-failure", f"{record.status.value}: {error}")]
        return []
    if record.status is not RunStatus.SUCCEEDED:
        return [("run-not-succeeded", f"{record.status.value}: {error}")]
    result = store.run_result(record)
    expected = inc.reference
    if not isinstance(result, dict) or not isinstance(expected, dict):
        return [("wrong-result", f"result {result!r} expected {expected!r}")]
    out: list[Violation] = []
    same = {k: v for k, v in result.items() if k != "det"} == {
        k: v for k, v in expected.items() if k != "det"
    }
    if not same:
        out.append(("wrong-result", f"result {result!r}, uninterrupted run gave {expected!r}"))
    n, det = journal_det_digest(journal, values)
    if (n, det) != (result.get("n_det"), result.get("det")):
        out.append(
            (
                "det-reads-not-journaled",
                f"the result saw {result.get('n_det')} deterministic reads with digest "
                f"{result.get('det')}, the journal holds {n} with digest {det}",
            )
        )
    return out


def _plain(value: Any) -> Any:
    try:
        return to_plain(value)
    except Exception:  # compare the raw value then
        return value


def check_observations(
    inc: Incarnation, journal: list[JournalEntry], values: dict[int, Any]
) -> list[Violation]:
    """Every value the completing leg's code saw is the journal's value at that seq."""
    if inc.completing_leg is None:
        return []
    with PROBES.lock:
        seen: list[Observation] = list(PROBES.observed.get(inc.completing_leg, ()))
    by_name = {
        e.name: e for e in journal if e.kind is EntryKind.STEP and e.status is EntryStatus.OK
    }
    out: list[Violation] = []
    for obs in seen:
        entry: JournalEntry | None
        if obs.seq is None:
            entry = by_name.get(obs.name)
        else:
            entry = journal[obs.seq] if obs.seq < len(journal) else None
        if entry is None or entry.name != obs.name:
            where = f"seq {obs.seq}" if obs.seq is not None else "the journal"
            found = f"{entry.kind.value} {entry.name!r}" if entry else "nothing"
            out.append(
                (
                    "unjournaled-value-seen",
                    f"user code saw {obs.kind} {obs.name!r} at {where}, the journal has {found}",
                )
            )
            continue
        journaled = values.get(entry.seq)
        if _plain(obs.value) != _plain(journaled):
            out.append(
                (
                    "seen-value-differs",
                    f"seq {entry.seq} {obs.kind} {obs.name!r}: user code saw "
                    f"{_short(obs.value)}, the journal holds {_short(journaled)}",
                )
            )
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def check_side_effects(inc: Incarnation, journal: list[JournalEntry]) -> list[Violation]:
    """A step body runs more than once only if a leg was interrupted while it was in flight."""
    with PROBES.lock:
        runs = {name: n for (key, name), n in PROBES.executions.items() if key == inc.run_key}
    out: list[Violation] = []
    for entry in journal:
        if entry.kind is not EntryKind.STEP or entry.status is EntryStatus.RETRY:
            continue
        n = runs.get(entry.name, 0)
        if n == 0:
            out.append(
                (
                    "journaled-without-running",
                    f"step {entry.name!r} is in this incarnation's journal but its body never "
                    "ran in it (a value from another incarnation or a stale cache?)",
                )
            )
        elif n - 1 > inc.interruptions:
            out.append(
                (
                    "too-many-executions",
                    f"step {entry.name!r} ran {n} times with {inc.interruptions} interruptions",
                )
            )
    return out
