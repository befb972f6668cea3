"""Redis hot tier: every state change is one Lua script, so one round trip and atomic.

Keys, for the prefix ``P`` and run ``R``::

    P:run:{R}        hash: v = version, doc = the framed RunRecord
    P:journal:{R}    list: index i holds entry seq i (RPUSH only, never trimmed)
    P:signals:{R}    hash: "<signal_id>:<name>" -> framed Signal (signal ids sort by time)
    P:due            sorted set: run id scored by ``due_at()`` in epoch seconds
    P:ended          sorted set: ended run id scored by ``ended_at()``, for retention
    P:runs           sorted set: run id scored by ``created_at``, for listing
    P:log:{L}        list: index i holds record i of record log L (``statestore/logs.py``)
    P:logs           hash: log id -> its label, for listing logs

The ``{R}`` hash tag puts a run's three keys in one Redis Cluster slot. The two indexes are
global and the scripts touch them together with the run's keys, which a single Redis (or a
primary with replicas) allows and Redis Cluster does not (CROSSSLOT). This backend therefore
targets a single primary; a Cluster port would have to shard the indexes per slot.

Durability is the server's: with AOF (``appendonly yes``) a restart keeps every acknowledged
script. A server that keeps nothing on disk loses every run when it restarts, and opening the
store on such a server logs a warning saying so.

Automatic client retries are off on purpose. A script that timed out may have run; replaying it
would fail its version check against its own write and surface as a spurious conflict. The caller
gets ``StoreUnavailableError`` instead, re-reads, and decides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)
from redis.retry import Retry

from statestore import serialize
from statestore.errors import (
    CorruptStateError,
    InvalidStoreUrlError,
    RunNotFoundError,
    StateStoreError,
    StoreUnavailableError,
)
from statestore.hot import Clock, HotTier, ListedRun, RunCursor
from statestore.models import JournalEntry, RunRecord, Signal, utcnow

log = logging.getLogger("statestore.redis")

_PAGE = 1000  # journal entries per LRANGE

# Error codes a server answers with while it cannot serve writes for now; retrying later is safe.
_TRANSIENT_CODES = ("OOM", "MISCONF", "LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "BUSY")

_SEQ_ERROR = "OUTLAST_SEQ"

# KEYS: run, runs, due.  ARGV: version, doc, created score, due score ("" = none), run id.
# Returns 1 if inserted, else the stored doc.
_INSERT_RUN = """
local doc = redis.call('HGET', KEYS[1], 'doc')
if doc then return doc end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'doc', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5]) end
return 1
"""

# KEYS: run, journal, signals, due, ended.
# ARGV: old version, new version, new doc, due score ("" = none), run id,
#       signal field to delete ("" = none), first seq, ended score ("" = none), entry docs...
# Returns 1 on success, 0 if the run is gone, else the stored doc (a version conflict).
# Every check comes before the first write, so a refused call writes nothing.
_WRITE = """
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return 0 end
if v ~= ARGV[1] then return redis.call('HGET', KEYS[1], 'doc') end
if #ARGV > 8 then
  local len = redis.call('LLEN', KEYS[2])
  if len ~= tonumber(ARGV[7]) then
    return redis.error_reply('OUTLAST_SEQ ' .. len)
  end
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'doc', ARGV[3])
-- unpack() is bounded by the Lua C stack (about 8000 values): push in slices.
for i = 9, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if ARGV[6] ~= '' then redis.call('HDEL', KEYS[3], ARGV[6]) end
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[4], ARGV[5])
else
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
end
if ARGV[8] == '' then
  redis.call('ZREM', KEYS[5], ARGV[5])
else
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[5])
end
return 1
"""

# KEYS: run, journal, signals, runs, due, ended.  ARGV: the claimed record's doc, run id.
# Deletes the run only if its stored doc is still exactly the claimed one (same incarnation and
# version), all in one script. Returns 1 if deleted, else 0.
_DELETE_ENDED = """
if redis.call('HGET', KEYS[1], 'doc') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
redis.call('ZREM', KEYS[6], ARGV[2])
return 1
"""

# KEYS: run, signals.  ARGV: field, doc.  Returns 0 if the run is gone (the signal is dropped).
_INSERT_SIGNAL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# KEYS: log, logs.  ARGV: position, data, log id, label.  Appends only at the log's tail.
_LOG_INSERT = """
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
if ARGV[1] == '0' then redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4]) end
return 1
"""

_LOG_PAGE = 1000  # records per LRANGE when a log is read


def mask_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _score(value: datetime | None) -> str:
    return repr(value.timestamp()) if value is not None else ""


def _signal_field(signal: Signal) -> str:
    # signal_id is fixed-width and has no ':', so fields sort by signal_id and split cleanly.
    return f"{signal.signal_id}:{signal.name}"


class RedisHotTier(HotTier):
    scheme = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "outlast",
        inline_limit: int | None = None,
        clock: Clock = utcnow,
        retention: timedelta | None = None,
        socket_timeout: float = 5.0,
        **redis_options: Any,
    ) -> None:
        super().__init__(inline_limit=inline_limit, clock=clock, retention=retention)
        if not prefix or any(c in prefix for c in "{}") or len(prefix) > 200:
            # Braces would move the Cluster hash tag away from the run id.
            raise ValueError(f"redis key prefix {prefix!r} must be 1-200 characters without braces")
        self.url = mask_password(url)
        self.prefix = prefix
        self._due_key = f"{prefix}:due"
        self._runs_key = f"{prefix}:runs"
        self._ended_key = f"{prefix}:ended"
        self._logs_key = f"{prefix}:logs"
        try:
            self._client: redis.Redis[bytes] = redis.Redis.from_url(
                url,
                decode_responses=False,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 0),
                **redis_options,
            )
        except ValueError as exc:
            raise InvalidStoreUrlError(f"cannot open redis store {self.url}: {exc}") from exc
        self._insert_run_script: Script = self._client.register_script(_INSERT_RUN)
        self._write_script: Script = self._client.register_script(_WRITE)
        self._insert_signal_script: Script = self._client.register_script(_INSERT_SIGNAL)
        self._delete_ended_script: Script = self._client.register_script(_DELETE_ENDED)
        self._log_insert_script: Script = self._client.register_script(_LOG_INSERT)
        try:
            with self._errors():
                self._warn_if_volatile()
        except StateStoreError:
            self._client.close()
            raise

    # ------------------------------------------------------------------ plumbing

    def run_key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{{{run_id}}}"

    def journal_key(self, run_id: str) -> str:
        return f"{self.prefix}:journal:{{{run_id}}}"

    def signals_key(self, run_id: str) -> str:
        return f"{self.prefix}:signals:{{{run_id}}}"

    def log_key(self, log_id: str) -> str:
        return f"{self.prefix}:log:{{{log_id}}}"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailableError(
                f"redis store {self.url} is unreachable: {exc or type(exc).__name__}"
            ) from exc
        except ResponseError as exc:
            text = str(exc)
            if text.startswith(_TRANSIENT_CODES):
                raise StoreUnavailableError(
                    f"redis store {self.url} cannot serve now: {text}"
                ) from exc
            raise StateStoreError(f"redis store {self.url} refused a command: {text}") from exc
        except RedisError as exc:
            raise StateStoreError(f"redis store {self.url}: {exc}") from exc

    def _warn_if_volatile(self) -> None:
        try:
            aof = self._client.config_get("appendonly").get("appendonly")
            save = self._client.config_get("save").get("save")
        except ResponseError as exc:
            # Managed services (ElastiCache) rename or forbid CONFIG; their persistence is
            # configured elsewhere, so there is nothing to check here.
            log.debug("redis store %s: cannot read its persistence settings: %s", self.url, exc)
            return
        if aof in (b"no", "no") and save in (b"", ""):
            log.warning(
                'redis store %s keeps nothing on disk (appendonly no, save ""): a Redis restart '
                "loses every run, journal and lease in it. Set appendonly yes for durable runs.",
                self.url,
            )

    def _record(self, run_id: str, doc: bytes) -> RunRecord:
        return serialize.load_record(doc, tier=self.scheme, key=self.run_key(run_id), run_id=run_id)

    # ------------------------------------------------------------------ primitives

    def _insert_run(self, record: RunRecord) -> RunRecord | None:
        run_id = record.run_id
        with self._errors():
            reply = self._insert_run_script(
                keys=[self.run_key(run_id), self._runs_key, self._due_key],
                args=[
                    str(record.version),
                    serialize.dump(record),
                    _score(record.created_at),
                    _score(record.due_at()),
                    run_id,
                ],
            )
        if isinstance(reply, bytes):
            return self._record(run_id, reply)
        return None

    def _load_run(self, run_id: str) -> RunRecord | None:
        with self._errors():
            doc = self._client.hget(self.run_key(run_id), "doc")
        return self._record(run_id, doc) if doc is not None else None

    def _write(
        self,
        old: RunRecord,
        new: RunRecord,
        entries: Sequence[JournalEntry],
        take: Signal | None,
    ) -> RunRecord | None:
        run_id = old.run_id
        args: list[str | bytes] = [
            str(old.version),
            str(new.version),
            serialize.dump(new),
            _score(new.due_at()),
            run_id,
            _signal_field(take) if take is not None else "",
            str(entries[0].seq) if entries else "",
            _score(self.ended_at(new)),
        ]
        args.extend(serialize.dump(e) for e in entries)
        with self._errors():
            try:
                reply = self._write_script(
                    keys=[
                        self.run_key(run_id),
                        self.journal_key(run_id),
                        self.signals_key(run_id),
                        self._due_key,
                        self._ended_key,
                    ],
                    args=args,
                )
            except ResponseError as exc:
                if not str(exc).startswith(_SEQ_ERROR):
                    raise
                # Defence in depth: the version check passed, so record and journal disagree.
                stored = str(exc).split()[1]
                raise CorruptStateError(
                    f"the journal holds {stored} entries but the run record says seq "
                    f"{entries[0].seq} is next",
                    run_id=run_id,
                    seq=entries[0].seq,
                    tier=self.scheme,
                    key=self.journal_key(run_id),
                ) from exc
        if reply == 1:
            return None
        if isinstance(reply, bytes):
            return self._record(run_id, reply)
        raise RunNotFoundError(run_id)

    def _load_entries(self, run_id: str, after_seq: int) -> Iterator[JournalEntry]:
        key = self.journal_key(run_id)
        start = after_seq + 1
        while True:
            with self._errors():
                docs = self._client.lrange(key, start, start + _PAGE - 1)
            for offset, doc in enumerate(docs):
                seq = start + offset
                yield serialize.load_entry(
                    doc, tier=self.scheme, key=f"{key}[{seq}]", run_id=run_id, seq=seq
                )
            if len(docs) < _PAGE:
                return
            start += _PAGE

    def _truncate(self, run_id: str, keep: int) -> None:
        with self._errors():
            if keep == 0:
                self._client.delete(self.journal_key(run_id))
            else:
                self._client.ltrim(self.journal_key(run_id), 0, keep - 1)

    def _insert_signal(self, signal: Signal) -> None:
        with self._errors():
            reply = self._insert_signal_script(
                keys=[self.run_key(signal.run_id), self.signals_key(signal.run_id)],
                args=[_signal_field(signal), serialize.dump(signal)],
            )
        if reply != 1:
            raise RunNotFoundError(signal.run_id)

    def _delete_signal(self, signal: Signal) -> bool:
        with self._errors():
            removed = self._client.hdel(self.signals_key(signal.run_id), _signal_field(signal))
        return bool(removed)

    def _load_signals(self, run_id: str, name: str | None) -> list[Signal]:
        key = self.signals_key(run_id)
        with self._errors():
            stored = self._client.hgetall(key)
        out: list[Signal] = []
        for field in sorted(stored):
            field_text = field.decode()
            if name is not None and field_text.partition(":")[2] != name:
                continue
            out.append(
                serialize.load_signal(
                    stored[field], tier=self.scheme, key=f"{key}[{field_text}]", run_id=run_id
                )
            )
        return out

    def _due(self, now: datetime, limit: int) -> list[str]:
        with self._errors():
            ids = self._client.zrangebyscore(
                self._due_key, "-inf", repr(now.timestamp()), start=0, num=limit
            )
        return [i.decode() for i in ids]

    def _list_runs(self, limit: int, before: RunCursor | None) -> list[ListedRun]:
        if limit <= 0:
            return []
        top = "+inf" if before is None else repr(before[0])
        picked: list[tuple[str, float]] = []
        offset = 0
        # ZREVRANGEBYSCORE orders runs created at the same instant by id, descending, like the
        # cursor; the ones at the cursor's instant that are not before it are skipped.
        while len(picked) < limit:
            with self._errors():
                batch = self._client.zrevrangebyscore(
                    self._runs_key, top, "-inf", start=offset, num=limit, withscores=True
                )
            for member, score in batch:
                run_id = member.decode()
                if before is None or (score, run_id) < before:
                    picked.append((run_id, score))
            if len(batch) < limit:
                break
            offset += len(batch)
        picked = picked[:limit]
        with self._errors():
            pipe = self._client.pipeline(transaction=False)
            for run_id, _ in picked:
                pipe.hget(self.run_key(run_id), "doc")
            docs: list[bytes | None] = pipe.execute()
        # A run deleted between the two calls has no doc any more; it is simply not listed.
        return [
            ((score, r), self._listed(r, partial(self._record, r, d)))
            for (r, score), d in zip(picked, docs, strict=True)
            if d is not None
        ]

    # ------------------------------------------------------------------ record logs

    def _log_insert(self, log_id: str, position: int, data: bytes, label: str) -> bool:
        with self._errors():
            reply = self._log_insert_script(
                keys=[self.log_key(log_id), self._logs_key],
                args=[str(position), data, log_id, label],
            )
        return bool(reply == 1)

    def _log_tail(self, log_id: str) -> int:
        with self._errors():
            return int(self._client.llen(self.log_key(log_id)))

    def _log_load(self, log_id: str, start: int) -> Iterator[tuple[int, bytes]]:
        key = self.log_key(log_id)
        cursor = start
        while True:
            with self._errors():
                page: list[bytes] = self._client.lrange(key, cursor, cursor + _LOG_PAGE - 1)
            for offset, data in enumerate(page):
                yield cursor + offset, data
            if len(page) < _LOG_PAGE:
                return
            cursor += len(page)

    def _log_delete(self, log_id: str) -> None:
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self.log_key(log_id))
            pipe.hdel(self._logs_key, log_id)
            pipe.execute()

    def _log_list(self, prefix: str) -> list[tuple[str, str]]:
        with self._errors():
            found = self._client.hgetall(self._logs_key)
        listed = [(i.decode(), label.decode()) for i, label in found.items()]
        return sorted((i, label) for i, label in listed if i.startswith(prefix))

    def _delete_run(self, run_id: str) -> None:
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self.run_key(run_id), self.journal_key(run_id), self.signals_key(run_id))
            pipe.zrem(self._runs_key, run_id)
            pipe.zrem(self._due_key, run_id)
            pipe.zrem(self._ended_key, run_id)
            pipe.execute()

    def _ended(self, before: datetime, limit: int) -> list[str]:
        if limit <= 0:
            return []
        with self._errors():
            ids = self._client.zrangebyscore(
                self._ended_key, "-inf", repr(before.timestamp()), start=0, num=limit
            )
        return [i.decode() for i in ids]

    def _delete_ended(self, claimed: RunRecord) -> bool:
        # The claim was written with exactly this doc, so equal bytes mean an untouched claim.
        run_id = claimed.run_id
        with self._errors():
            reply = self._delete_ended_script(
                keys=[
                    self.run_key(run_id),
                    self.journal_key(run_id),
                    self.signals_key(run_id),
                    self._runs_key,
                    self._due_key,
                    self._ended_key,
                ],
                args=[serialize.dump(claimed), run_id],
            )
        return bool(reply == 1)

    def close(self) -> None:
        with self._errors():
            self._client.close()
            self._client.connection_pool.disconnect()
