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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from statestore import serialize
from statestore.errors import (
    CorruptStateError,
    RunNotFoundError,
    SequenceConflictError,
    StateStoreError,
    StoreFullError,
    StoreUnavailableError,
)
from statestore.hot import HotTier, ListedRun, RunCursor
from statestore.models import JournalEntry, RunRecord, Signal

# SQLITE_FULL, SQLITE_READONLY: no room, or no right to write; retrying will not fix either.
_NO_ROOM_CODES = frozenset({13, 8})

# The schema's version, kept in ``PRAGMA user_version``. 0 is a new, empty file, or one written
# before versioning (version 1: a WITHOUT ROWID journal, no ended_at; version 2: no record
# logs). Each migration moves one version up; ``_prepare`` runs them in one transaction.
SCHEMA_VERSION = 3

# Page size of a new database (an existing one keeps its own). A journal row is an entry's whole
# document, often 2-3 KB: a 4 KB page fits one such row and wastes the rest, 16 KB pages fit
# five to seven. The file holds about 1.2x the bytes of incompressible 2 KB entries, not 2x.
_PAGE_SIZE = 16384

# The journal is an ordinary rowid table: rows live in the table's leaves, which keep a row of
# up to almost a page inline. WITHOUT ROWID stored them in an index b-tree, which keeps only
# about 1 KB inline and spills the rest into a 4 KB overflow page per row (2.3x the data).
_JOURNAL = """
CREATE TABLE {name} (
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    doc    BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
)"""

# ended_at: when the run ended (``HotTier.ended_at``), indexed for retention.
_ENDED_INDEX = "CREATE INDEX runs_ended ON runs (ended_at) WHERE ended_at IS NOT NULL"

# Record logs (``statestore/logs.py``): a log's number and label, and its records by dense
# position. Records are keyed by the log's number, not its id: a 28-character id repeated in
# every row and index entry cost 15% of a small record. AUTOINCREMENT: a number is never given
# to another log after a delete, so a writer's remembered number can only be stale, never
# wrong. The records are a rowid table for the journal's reason: rows of a few KB stay inline
# in its leaves.
_LOGS = (
    """
CREATE TABLE logs (
    log_no     INTEGER PRIMARY KEY AUTOINCREMENT,
    log_id     TEXT NOT NULL UNIQUE,
    label      TEXT NOT NULL,
    created_at REAL NOT NULL
)""",
    """
CREATE TABLE log_records (
    log_no   INTEGER NOT NULL,
    position INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (log_no, position)
)""",
)

_CREATE = (
    """
CREATE TABLE runs (
    run_id     TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    due_at     REAL,
    created_at REAL NOT NULL,
    doc        BLOB NOT NULL,
    ended_at   REAL
)""",
    "CREATE INDEX runs_due ON runs (due_at) WHERE due_at IS NOT NULL",
    "CREATE INDEX runs_created ON runs (created_at)",
    _ENDED_INDEX,
    _JOURNAL.format(name="journal"),
    """
CREATE TABLE signals (
    run_id    TEXT NOT NULL,
    name      TEXT NOT NULL,
    signal_id TEXT NOT NULL,
    doc       BLOB NOT NULL,
    PRIMARY KEY (run_id, name, signal_id)
) WITHOUT ROWID""",
    *_LOGS,
)

_PAGE = 1000

RecordLoader = Callable[[str, bytes], RunRecord]


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def _prepare(conn: sqlite3.Connection, load: RecordLoader) -> None:
    """Create the schema, or migrate an older one in place, once whoever opens the file first.

    Several processes may open a file at once: the write lock (BEGIN IMMEDIATE) lets one of them
    in at a time, and each re-reads the version under the lock, so a migration runs once and
    the others find it done. Migrations are all-or-nothing: a crash leaves the old schema.
    """
    if _user_version(conn) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        _upgrade(conn, load)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _upgrade(conn: sqlite3.Connection, load: RecordLoader) -> None:
    version = _user_version(conn)
    if version > SCHEMA_VERSION:
        raise StateStoreError(
            f"the sqlite store has schema version {version}, newer than this Outlast knows "
            f"({SCHEMA_VERSION}); upgrade this process"
        )
    if version == 0:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
        ).fetchone()
        if exists is None:
            for statement in _CREATE:
                conn.execute(statement)
            version = SCHEMA_VERSION
        else:
            version = 1
    while version < SCHEMA_VERSION:
        _MIGRATIONS[version](conn, load)
        version += 1
    # PRAGMA takes no parameters; version is an int of ours.
    conn.execute(f"PRAGMA user_version = {int(version)}")


def _v1_to_v2(conn: sqlite3.Connection, load: RecordLoader) -> None:
    """Index when ended runs ended, and move the journal to a rowid table."""
    conn.execute("ALTER TABLE runs ADD COLUMN ended_at REAL")
    ended: list[tuple[float, str]] = []
    for run_id, doc in conn.execute("SELECT run_id, doc FROM runs"):
        try:
            at = HotTier.ended_at(load(run_id, doc))
        except CorruptStateError:
            continue  # reported when the run is read; it just never expires
        if at is not None:
            ended.append((at.timestamp(), run_id))
    conn.executemany("UPDATE runs SET ended_at = ? WHERE run_id = ?", ended)
    conn.execute(_ENDED_INDEX)
    conn.execute(_JOURNAL.format(name="journal_v2"))
    conn.execute(
        "INSERT INTO journal_v2 (run_id, seq, doc) SELECT run_id, seq, doc FROM journal "
        "ORDER BY run_id, seq"
    )
    conn.execute("DROP TABLE journal")
    conn.execute("ALTER TABLE journal_v2 RENAME TO journal")


def _v2_to_v3(conn: sqlite3.Connection, load: RecordLoader) -> None:
    """Add the record logs."""
    for statement in _LOGS:
        conn.execute(statement)


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection, RecordLoader], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
}


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
        # Every connection this process opened, with the thread that uses it.
        self._owners: dict[sqlite3.Connection, threading.Thread] = {}
        self._owners_pid = os.getpid()
        self._owners_lock = threading.Lock()
        self._log_nos: dict[str, int] = {}  # log id -> its number, as last written
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(f"cannot create {self.path.parent}: {exc}") from exc
        with self._errors():
            _prepare(self._conn(), self._record)

    # Each thread (and each forked process) gets its own connection: sqlite3 connections must not
    # be used by two threads at once, and never across a fork. A thread that has ended leaves
    # its connection to the next new thread: opening one (WAL, pragmas) costs about 0.5 ms, and
    # thread pools that start threads per task (LangGraph's savers, ctx.map) would pay it on
    # every write otherwise.
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self._adopt() or self._connect()
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _adopt(self) -> sqlite3.Connection | None:
        """A connection whose thread has ended, now this thread's; None if there is none."""
        me = threading.current_thread()
        with self._owners_lock:
            if self._owners_pid != os.getpid():  # a forked child: the parent's are not ours
                self._owners, self._owners_pid = {}, os.getpid()
            for conn, owner in self._owners.items():
                if not owner.is_alive():
                    self._owners[conn] = me
                    break
            else:
                return None
        if conn.in_transaction:  # never left open by this module; be sure all the same
            conn.execute("ROLLBACK")
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        # Before WAL mode, which writes the file's first page: after that the size is fixed
        # (and on an existing file this does nothing).
        conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        with self._owners_lock:
            if self._owners_pid != os.getpid():
                self._owners, self._owners_pid = {}, os.getpid()
            self._owners[conn] = threading.current_thread()
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise SequenceConflictError(f"sqlite rejected a duplicate row: {exc}") from exc
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) in _NO_ROOM_CODES:
                raise StoreFullError(f"sqlite store {self.path}: {exc}") from exc
            raise StoreUnavailableError(f"sqlite store {self.path}: {exc}") from exc

    def _record(self, run_id: str, doc: bytes) -> RunRecord:
        return serialize.load_record(doc, tier=self.scheme, key=f"runs/{run_id}", run_id=run_id)

    def _insert_run(self, record: RunRecord) -> RunRecord | None:
        with self._errors():
            conn = self._conn()
            cur = conn.execute(
                "INSERT OR IGNORE INTO runs (run_id, version, due_at, ended_at, created_at, doc) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.run_id,
                    record.version,
                    _ts(record.due_at()),
                    _ts(self.ended_at(record)),
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
                    "UPDATE runs SET version = ?, due_at = ?, ended_at = ?, doc = ? "
                    "WHERE run_id = ? AND version = ?",
                    (
                        new.version,
                        _ts(new.due_at()),
                        _ts(self.ended_at(new)),
                        doc,
                        run_id,
                        old.version,
                    ),
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

    def _delete_signal(self, signal: Signal) -> bool:
        with self._errors():
            cur = self._conn().execute(
                "DELETE FROM signals WHERE run_id = ? AND name = ? AND signal_id = ?",
                (signal.run_id, signal.name, signal.signal_id),
            )
            return cur.rowcount == 1

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

    def _list_runs(self, limit: int, before: RunCursor | None) -> list[ListedRun]:
        select = "SELECT run_id, created_at, doc FROM runs "
        order = "ORDER BY created_at DESC, run_id DESC LIMIT ?"
        with self._errors():
            conn = self._conn()
            if before is None:
                rows = conn.execute(select + order, (limit,)).fetchall()
            else:
                at, after_id = before
                rows = conn.execute(
                    select + "WHERE created_at < ? OR (created_at = ? AND run_id < ?) " + order,
                    (at, at, after_id, limit),
                ).fetchall()
        return [
            ((created, run_id), self._listed(run_id, partial(self._record, run_id, doc)))
            for run_id, created, doc in rows
        ]

    def _truncate(self, run_id: str, keep: int) -> None:
        with self._errors():
            self._conn().execute(
                "DELETE FROM journal WHERE run_id = ? AND seq >= ?", (run_id, keep)
            )

    def _delete_run(self, run_id: str) -> None:
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            for table in ("journal", "signals", "runs"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))  # noqa: S608
            conn.execute("COMMIT")

    def _ended(self, before: datetime, limit: int) -> list[str]:
        with self._errors():
            rows = (
                self._conn()
                .execute(
                    "SELECT run_id FROM runs WHERE ended_at IS NOT NULL AND ended_at <= ? "
                    "ORDER BY ended_at LIMIT ?",
                    (before.timestamp(), limit),
                )
                .fetchall()
            )
        return [r[0] for r in rows]

    def _delete_ended(self, claimed: RunRecord) -> bool:
        run_id = claimed.run_id
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT doc FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                stored = self._record(run_id, row[0]) if row else None
                if stored is None or (stored.incarnation, stored.version) != (
                    claimed.incarnation,
                    claimed.version,
                ):
                    conn.execute("ROLLBACK")
                    return False
                for table in ("journal", "signals", "runs"):
                    conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))  # noqa: S608
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return True

    # ------------------------------------------------------------------ record logs

    def _log_no(self, log_id: str) -> int | None:
        with self._errors():
            row = (
                self._conn()
                .execute("SELECT log_no FROM logs WHERE log_id = ?", (log_id,))
                .fetchone()
            )
        return None if row is None else int(row[0])

    def _log_insert(self, log_id: str, position: int, data: bytes, label: str) -> bool:
        # One statement is atomic: the row goes in only at the log's tail (the primary key
        # refuses a taken position, the EXISTS a gap), so racing writers and a stale tail never
        # overwrite or leave holes.
        insert = (
            "INSERT OR IGNORE INTO log_records (log_no, position, data) SELECT ?, ?, ? "
            "WHERE ? = 0 OR EXISTS (SELECT 1 FROM log_records WHERE log_no = ? AND position = ?)"
        )
        with self._errors():
            conn = self._conn()
            if position != 0:
                # The log's number, remembered: it never changes while the log lives, and a
                # number is never reused, so a stale one (the log was deleted) only fails.
                log_no = self._log_nos.get(log_id) or self._log_no(log_id)
                if log_no is None:
                    return False
                args = (log_no, position, data, position, log_no, position - 1)
                done = conn.execute(insert, args).rowcount == 1
                if done:
                    self._log_nos[log_id] = log_no
                else:
                    self._log_nos.pop(log_id, None)
                return bool(done)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR IGNORE INTO logs (log_id, label, created_at) VALUES (?, ?, ?)",
                    (log_id, label, self.now().timestamp()),
                )
                (log_no,) = conn.execute(
                    "SELECT log_no FROM logs WHERE log_id = ?", (log_id,)
                ).fetchone()
                done = conn.execute(insert, (log_no, 0, data, 0, log_no, -1)).rowcount == 1
                conn.execute("COMMIT" if done else "ROLLBACK")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if done:
            self._log_nos[log_id] = int(log_no)
        return done

    def _log_tail(self, log_id: str) -> int:
        with self._errors():
            row = (
                self._conn()
                .execute(
                    "SELECT MAX(position) FROM log_records WHERE log_no = "
                    "(SELECT log_no FROM logs WHERE log_id = ?)",
                    (log_id,),
                )
                .fetchone()
            )
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def _log_load(self, log_id: str, start: int) -> Iterable[tuple[int, bytes]]:
        log_no = self._log_no(log_id)  # read afresh: a reader must see a re-created log
        if log_no is None:
            return
        conn = self._conn()
        cursor = start
        while True:
            with self._errors():
                rows = conn.execute(
                    "SELECT position, data FROM log_records WHERE log_no = ? AND position >= ? "
                    "ORDER BY position LIMIT ?",
                    (log_no, cursor, _PAGE),
                ).fetchall()
            for position, data in rows:
                yield int(position), bytes(data)
            if len(rows) < _PAGE:
                return
            cursor = rows[-1][0] + 1

    def _log_delete(self, log_id: str) -> None:
        self._log_nos.pop(log_id, None)
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "DELETE FROM log_records WHERE log_no = "
                    "(SELECT log_no FROM logs WHERE log_id = ?)",
                    (log_id,),
                )
                conn.execute("DELETE FROM logs WHERE log_id = ?", (log_id,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _log_list(self, prefix: str) -> list[tuple[str, str]]:
        # Log ids are ASCII below DEL, so [prefix, prefix + DEL) is exactly the ids with prefix.
        with self._errors():
            rows = (
                self._conn()
                .execute(
                    "SELECT log_id, label FROM logs WHERE log_id >= ? AND log_id < ? "
                    "ORDER BY log_id",
                    (prefix, prefix + "\x7f"),
                )
                .fetchall()
            )
        return [(str(i), str(label)) for i, label in rows]

    def close(self) -> None:
        """Close this thread's connection and those of threads that have ended (a live thread's
        stays open: closing it under that thread would break its next call)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        with self._owners_lock:
            owned = self._owners if self._owners_pid == os.getpid() else {}
            idle = [c for c, owner in owned.items() if c is conn or not owner.is_alive()]
            for c in idle:
                owned.pop(c, None)
        for c in idle:
            c.close()
        if (
            conn is not None
            and conn not in idle
            and getattr(self._local, "pid", None) == os.getpid()
        ):
            conn.close()
        self._local.conn = None
