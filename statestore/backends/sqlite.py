"""SQLite hot tier: the embedded default, safe for several processes on one machine.

WAL journaling lets readers run beside the one writer. With ``synchronous=NORMAL`` a commit is
durable against any process crash (``kill -9`` at any moment loses no committed append); only a
power loss or OS crash can drop the last transactions. ``synchronous=FULL`` (URL option
``?synchronous=full``) closes that gap at the cost of an fsync per commit.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from statestore import serialize
from statestore.errors import (
    RunNotFoundError,
    SequenceConflictError,
    StoreUnavailableError,
)
from statestore.hot import HotTier
from statestore.models import JournalEntry, RunRecord, Signal

_SCHEMA = """
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

_PAGE = 1000


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


class SqliteHotTier(HotTier):
    scheme = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 10_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(f"cannot create {self.path.parent}: {exc}") from exc
        with self._errors():
            conn = self._conn()
            conn.executescript(_SCHEMA)

    # Each thread (and each forked process) gets its own connection: sqlite3 connections must not
    # be shared across threads, and never across a fork.
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise SequenceConflictError(f"sqlite rejected a duplicate row: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite store {self.path}: {exc}") from exc

    def _record(self, run_id: str, doc: bytes) -> RunRecord:
        return serialize.load_record(doc, tier=self.scheme, key=f"runs/{run_id}", run_id=run_id)

    def _insert_run(self, record: RunRecord) -> RunRecord | None:
        with self._errors():
            conn = self._conn()
            cur = conn.execute(
                "INSERT OR IGNORE INTO runs (run_id, version, due_at, created_at, doc) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    record.run_id,
                    record.version,
                    _ts(record.due_at()),
                    record.created_at.timestamp(),
                    serialize.dump(record),
                ),
            )
            if cur.rowcount == 1:
                return None
        existing = self._load_run(record.run_id)
        assert existing is not None
        return existing

    def _load_run(self, run_id: str) -> RunRecord | None:
        with self._errors():
            row = (
                self._conn().execute("SELECT doc FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            )
        return self._record(run_id, row[0]) if row else None

    def _write(
        self,
        old: RunRecord,
        new: RunRecord,
        entries: Sequence[JournalEntry],
        take: Signal | None,
    ) -> RunRecord | None:
        run_id = old.run_id
        doc = serialize.dump(new)
        rows = [(run_id, e.seq, serialize.dump(e)) for e in entries]
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "UPDATE runs SET version = ?, due_at = ?, doc = ? "
                    "WHERE run_id = ? AND version = ?",
                    (new.version, _ts(new.due_at()), doc, run_id, old.version),
                )
                if cur.rowcount != 1:
                    row = conn.execute(
                        "SELECT doc FROM runs WHERE run_id = ?", (run_id,)
                    ).fetchone()
                    conn.execute("ROLLBACK")
                    if row is None:
                        raise RunNotFoundError(run_id)
                    return self._record(run_id, row[0])
                if len(rows) == 1:
                    conn.execute("INSERT INTO journal (run_id, seq, doc) VALUES (?, ?, ?)", rows[0])
                elif rows:
                    conn.executemany(
                        "INSERT INTO journal (run_id, seq, doc) VALUES (?, ?, ?)", rows
                    )
                if take is not None:
                    conn.execute(
                        "DELETE FROM signals WHERE run_id = ? AND name = ? AND signal_id = ?",
                        (run_id, take.name, take.signal_id),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return None

    def _load_entries(self, run_id: str, after_seq: int) -> Iterable[JournalEntry]:
        conn = self._conn()
        cursor = after_seq
        while True:
            with self._errors():
                rows = conn.execute(
                    "SELECT seq, doc FROM journal WHERE run_id = ? AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (run_id, cursor, _PAGE),
                ).fetchall()
            for seq, doc in rows:
                yield serialize.load_entry(
                    doc, tier=self.scheme, key=f"journal/{run_id}/{seq}", run_id=run_id, seq=seq
                )
            if len(rows) < _PAGE:
                return
            cursor = rows[-1][0]

    def _insert_signal(self, signal: Signal) -> None:
        with self._errors():
            self._conn().execute(
                "INSERT INTO signals (run_id, name, signal_id, doc) VALUES (?, ?, ?, ?)",
                (signal.run_id, signal.name, signal.signal_id, serialize.dump(signal)),
            )

    def _load_signals(self, run_id: str, name: str | None) -> list[Signal]:
        with self._errors():
            if name is None:
                rows = (
                    self._conn()
                    .execute(
                        "SELECT signal_id, doc FROM signals WHERE run_id = ? ORDER BY signal_id",
                        (run_id,),
                    )
                    .fetchall()
                )
            else:
                rows = (
                    self._conn()
                    .execute(
                        "SELECT signal_id, doc FROM signals WHERE run_id = ? AND name = ? "
                        "ORDER BY signal_id",
                        (run_id, name),
                    )
                    .fetchall()
                )
        return [
            serialize.load_signal(
                doc, tier=self.scheme, key=f"signals/{run_id}/{sid}", run_id=run_id
            )
            for sid, doc in rows
        ]

    def _due(self, now: datetime, limit: int) -> list[str]:
        with self._errors():
            rows = (
                self._conn()
                .execute(
                    "SELECT run_id FROM runs WHERE due_at IS NOT NULL AND due_at <= ? "
                    "ORDER BY due_at LIMIT ?",
                    (now.timestamp(), limit),
                )
                .fetchall()
            )
        return [r[0] for r in rows]

    def _list_runs(self, limit: int) -> list[RunRecord]:
        with self._errors():
            rows = (
                self._conn()
                .execute("SELECT run_id, doc FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
                .fetchall()
            )
        return [self._record(run_id, doc) for run_id, doc in rows]

    def _delete_run(self, run_id: str) -> None:
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            for table in ("journal", "signals", "runs"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))  # noqa: S608
            conn.execute("COMMIT")

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
