"""Redis-only behaviour: outages and restarts, the no-persistence warning, key layout."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from statestore import (
    CorruptStateError,
    EntryKind,
    InvalidStoreUrlError,
    JournalEntry,
    RunNotFoundError,
    StoreUnavailableError,
    open_hot,
)
from statestore.backends.redis import RedisHotTier, mask_password
from tests.conftest import unique
from tests.support.servers import RedisServer, free_port, wait_for_port

TTL = timedelta(seconds=60)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(seq: int, value: bytes = b"v") -> JournalEntry:
    return JournalEntry(
        seq=seq, kind=EntryKind.STEP, name="s", value=value, started_at=T0, ended_at=T0
    )


@pytest.fixture
def own_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server of this test alone, so the test may kill it. Persistent if parametrized."""
    server = RedisServer(workdir=tmp_path, persistent=bool(getattr(request, "param", False)))
    server.start()
    yield server
    server.stop()


# ---------------------------------------------------------------- outages


@pytest.mark.parametrize("own_server", [True], indirect=True, ids=["aof"])
def test_killed_redis_is_reported_and_the_store_recovers_with_its_data(
    own_server: RedisServer,
) -> None:
    hot = RedisHotTier(own_server.url, prefix=unique("k"), socket_timeout=2.0)
    hot.create_run("r1", "fn")
    token = hot.acquire_lease("r1", "leg", TTL).token
    hot.append("r1", token, [entry(0, b"before")])

    own_server.stop()  # SIGKILL, as an OOM killer or a crashed node would
    with pytest.raises(
        StoreUnavailableError, match=rf"redis store {own_server.url} is unreachable"
    ):
        hot.append("r1", token, [entry(1, b"during")])
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        hot.read_journal("r1")

    own_server.start()  # same port, same directory: the AOF is replayed
    assert [e.value for e in hot.read_journal("r1")] == [b"before"]
    # The restarted server has an empty script cache: the next append must reload its script.
    hot.append("r1", token, [entry(1, b"after")])
    assert [e.value for e in hot.read_journal("r1")] == [b"before", b"after"]
    assert hot.get_run("r1").next_seq == 2
    hot.close()


def test_restart_of_a_volatile_redis_loses_runs_but_the_store_works_again(
    own_server: RedisServer,
) -> None:
    hot = RedisHotTier(own_server.url, prefix=unique("k"), socket_timeout=2.0)
    hot.create_run("r1", "fn")
    own_server.stop()
    with pytest.raises(StoreUnavailableError):
        hot.get_run("r1")
    own_server.start()
    with pytest.raises(RunNotFoundError):
        hot.get_run("r1")
    hot.create_run("r1", "fn")
    token = hot.acquire_lease("r1", "leg", TTL).token
    hot.append("r1", token, [entry(0)])
    assert len(hot.read_journal("r1")) == 1
    hot.close()


def test_unreachable_server_names_the_url_without_its_password() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreUnavailableError) as info:
        RedisHotTier(url, socket_timeout=1.0)
    message = str(info.value)
    assert f"redis://user:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "s3cret" not in message


def test_mask_password_leaves_urls_without_one_alone() -> None:
    assert mask_password("redis://127.0.0.1:6380/2") == "redis://127.0.0.1:6380/2"
    assert mask_password("rediss://:pw@h:1/0") == "rediss://:***@h:1/0"


# ---------------------------------------------------------------- persistence warning


def _volatile_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "statestore.redis"
        and r.levelno == logging.WARNING
        and "restart loses every run" in r.getMessage()
    ]


def test_volatile_server_warns_on_open(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="statestore.redis")
    hot = open_hot(f"{redis_server.url}?prefix={unique('w')}")
    hot.close()
    warnings = _volatile_warnings(caplog)
    assert len(warnings) == 1
    assert redis_server.url in warnings[0].getMessage()
    assert "appendonly yes" in warnings[0].getMessage()


@pytest.mark.parametrize("own_server", [True], indirect=True, ids=["aof"])
def test_persistent_server_does_not_warn(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="statestore.redis")
    RedisHotTier(own_server.url).close()
    assert _volatile_warnings(caplog) == []


def test_server_without_config_command_skips_the_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Managed services such as ElastiCache rename CONFIG away; the store must still open.
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
            "--save",
            "",
            "--appendonly",
            "no",
            "--rename-command",
            "CONFIG",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        caplog.set_level(logging.DEBUG, logger="statestore.redis")
        hot = RedisHotTier(f"redis://127.0.0.1:{port}/0")
        hot.create_run("r1", "fn")
        assert hot.get_run("r1").function == "fn"
        hot.close()
        assert _volatile_warnings(caplog) == []
        assert any(
            r.levelno == logging.DEBUG and "persistence settings" in r.getMessage()
            for r in caplog.records
        )
    finally:
        proc.kill()
        proc.wait(timeout=10)


# ---------------------------------------------------------------- keys


def test_two_prefixes_do_not_collide(redis_server: RedisServer) -> None:
    a = RedisHotTier(redis_server.url, prefix=unique("a"))
    b = RedisHotTier(redis_server.url, prefix=unique("b"))
    a.create_run("r1", "fn", input=b"a-in", input_hash="ha")
    b.create_run("r1", "fn", input=b"b-in", input_hash="hb")  # no RunConflictError
    ta = a.acquire_lease("r1", "leg-a", TTL).token
    tb = b.acquire_lease("r1", "leg-b", TTL).token
    a.append("r1", ta, [entry(0, b"from-a")])
    b.append("r1", tb, [entry(0, b"from-b"), entry(1, b"from-b")])
    a.put_signal("r1", "go", b"sig-a")

    assert [e.value for e in a.read_journal("r1")] == [b"from-a"]
    assert [e.value for e in b.read_journal("r1")] == [b"from-b", b"from-b"]
    assert a.get_run("r1").input == b"a-in" and b.get_run("r1").input == b"b-in"
    assert b.pending_signals("r1") == []
    assert [r.run_id for r in b.list_runs()] == ["r1"]

    a.delete_run("r1")
    assert a.find_run("r1") is None and a.list_runs() == [] and a.due_runs() == []
    assert b.get_run("r1").next_seq == 2
    assert len(b.read_journal("r1")) == 2
    raw: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    assert raw.keys(f"{a.prefix}:*") == []
    assert len(raw.keys(f"{b.prefix}:*")) == 4  # run, journal, runs, due (no signals)
    raw.close()
    a.close()
    b.close()


def test_a_runs_keys_share_one_cluster_slot(redis_server: RedisServer) -> None:
    hot = RedisHotTier(redis_server.url, prefix="p")
    slots = {
        key_slot(k.encode())
        for k in (hot.run_key("r1"), hot.journal_key("r1"), hot.signals_key("r1"))
    }
    assert slots == {key_slot(b"r1")}
    assert key_slot(hot.run_key("r2").encode()) != key_slot(b"r1")
    hot.close()


def test_prefix_with_braces_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="without braces"):
        RedisHotTier(redis_server.url, prefix="a{b}")


def test_journal_longer_than_the_record_says_is_reported_not_extended(
    redis_server: RedisServer,
) -> None:
    hot = RedisHotTier(redis_server.url, prefix=unique("j"))
    hot.create_run("r1", "fn")
    token = hot.acquire_lease("r1", "leg", TTL).token
    hot.append("r1", token, [entry(0)])
    raw: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    raw.rpush(hot.journal_key("r1"), b"stray")  # damage: an entry the record does not count
    with pytest.raises(CorruptStateError, match="journal holds 2 entries") as info:
        hot.append("r1", token, [entry(1)])
    assert (info.value.run_id, info.value.seq, info.value.key) == ("r1", 1, hot.journal_key("r1"))
    assert raw.llen(hot.journal_key("r1")) == 2
    assert hot.get_run("r1").next_seq == 1
    raw.close()
    hot.close()


def test_malformed_url_is_an_invalid_store_url() -> None:
    with pytest.raises(InvalidStoreUrlError, match="redis store"):
        open_hot("redis://127.0.0.1:notaport/0")
