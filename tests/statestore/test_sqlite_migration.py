"""The SQLite schema: versioned in PRAGMA user_version, migrated in place, compact journal rows."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from statestore import (
    EntryKind,
    JournalEntry,
    RunRecord,
    RunStatus,
    SequenceConflictError,
    Signal,
    StateStoreError,
    StoreUnavailableError,
    serialize,
)
from statestore.backends.sqlite import SCHEMA_VERSION, SqliteHotTier

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# The schema as it was before versioning (user_version 0), verbatim.
_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    due_at     REAL,
    created_at REAL NOT NULL,
    doc        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_due ON runs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
CREATE TABLE IF NOT EXISTS journal (
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    doc    BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signals (
    run_id    TEXT NOT NULL,
    name      TEXT NOT NULL,
    signal_id TEXT NOT NULL,
    doc       BLOB NOT NULL,
    PRIMARY KEY (run_id, name, signal_id)
) WITHOUT ROWID;
"""

ENTRIES = 30


def entry(seq: int, value: bytes) -> JournalEntry:
    return JournalEntry(
        seq=seq, kind=EntryKind.STEP, name="s", value=value, started_at=T0, ended_at=T0
    )


def value(seq: int) -> bytes:
    return random.Random(seq).randbytes(2500)


def legacy_db(path: Path) -> None:
    """A database written by the code before versioning: a live run and an ended one."""
    live = RunRecord(
        run_id="live",
        function="fn",
        incarnation="i1",
        status=RunStatus.SUSPENDED,
        wake_at=T0 + timedelta(hours=1),
        waiting_for="go",
        next_seq=ENTRIES,
        version=ENTRIES + 1,
        created_at=T0,
        updated_at=T0,
    )
    done = RunRecord(
        run_id="done",
        function="fn",
        incarnation="i2",
        status=RunStatus.SUCCEEDED,
        result=b"ok",
        version=3,
        created_at=T0,
        updated_at=T0 + timedelta(minutes=5),
    )
    signal = Signal(run_id="live", name="go", signal_id="0001", payload=b"p", sent_at=T0)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(_V1)
    for record in (live, done):
        due = record.due_at()
        conn.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
            (
                record.run_id,
                record.version,
                due.timestamp() if due else None,
                record.created_at.timestamp(),
                serialize.dump(record),
            ),
        )
    conn.executemany(
        "INSERT INTO journal VALUES (?, ?, ?)",
        [("live", i, serialize.dump(entry(i, value(i)))) for i in range(ENTRIES)],
    )
    conn.execute(
        "INSERT INTO signals VALUES (?, ?, ?, ?)",
        ("live", "go", "0001", serialize.dump(signal)),
    )
    conn.close()


def table_sql(path: Path, name: str) -> str:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return str(row[0])
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_a_legacy_database_is_migrated_in_place_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    legacy_db(path)
    assert user_version(path) == 0
    hot = SqliteHotTier(path, clock=lambda: T0 + timedelta(days=2), retention=timedelta(days=1))
    try:
        assert user_version(path) == SCHEMA_VERSION == 3
        assert "WITHOUT ROWID" not in table_sql(path, "journal")
        assert [e.value for e in hot.read_journal("live")] == [value(i) for i in range(ENTRIES)]
        assert [s.payload for s in hot.pending_signals("live")] == [b"p"]
        assert hot.get_run("live").status is RunStatus.SUSPENDED
        assert hot.due_runs(T0 + timedelta(hours=2)) == ["live"]
        # Runs that had ended before the migration are indexed for retention too.
        assert hot.expired_runs() == ["done"]
        # The rebuilt journal still refuses a second entry at a seq.
        token = hot.acquire_lease("live", "leg", timedelta(minutes=1)).token
        hot.append("live", token, [entry(ENTRIES, b"next")])
        assert hot.read_journal("live", after_seq=ENTRIES - 1)[0].value == b"next"
        with pytest.raises(SequenceConflictError):
            hot._write(
                hot.get_run("live"),
                hot.get_run("live").model_copy(update={"version": 99}),
                [entry(0, b"dup")],
                None,
            )
    finally:
        hot.close()


def test_a_failed_migration_leaves_the_old_schema_whole(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    legacy_db(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE journal_v2 (x)")  # in the way of the migration's new table
    conn.close()
    with pytest.raises(StoreUnavailableError, match="journal_v2"):
        SqliteHotTier(path)
    assert user_version(path) == 0
    assert "WITHOUT ROWID" in table_sql(path, "journal")
    assert "ended_at" not in table_sql(path, "runs")
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM journal").fetchone()[0] == ENTRIES
    conn.close()


_OPEN = """
import sys
from statestore.backends.sqlite import SqliteHotTier
hot = SqliteHotTier(sys.argv[1])
print(len(hot.read_journal("live")))
"""


def test_processes_opening_a_legacy_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    legacy_db(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert [out.strip() for out, _ in outputs] == [str(ENTRIES)] * 4
    assert user_version(path) == SCHEMA_VERSION
    assert "WITHOUT ROWID" not in table_sql(path, "journal")


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    SqliteHotTier(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StateStoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        SqliteHotTier(path)


def test_a_long_conversation_takes_at_most_one_and_a_half_times_its_bytes(
    tmp_path: Path,
) -> None:
    # 1,000 turns of about 2 KB of incompressible text: each turn one journal entry.
    path = tmp_path / "hot.db"
    hot = SqliteHotTier(path)
    hot.create_run("chat", "fn")
    token = hot.acquire_lease("chat", "leg", timedelta(minutes=10)).token
    rng = random.Random(7)
    turns = [rng.randbytes(2048) for _ in range(1000)]
    for start in range(0, len(turns), 100):
        hot.append(
            "chat",
            token,
            [entry(start + i, turn) for i, turn in enumerate(turns[start : start + 100])],
        )
    hot.close()  # the last connection checkpoints the WAL into the file
    stored = path.stat().st_size + sum(
        p.stat().st_size for p in tmp_path.glob("hot.db-*") if p.exists()
    )
    assert stored <= 1.5 * sum(len(t) for t in turns), stored
