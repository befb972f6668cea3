"""Refused starts and signals write nothing, to either tier; a run's input identity is canonical.

The store's inline limit is tiny here, so any input or payload that got as far as being encoded
would land in the cold tier as a blob: an empty cold directory proves the refusal came first.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outlast import App, Context
from outlast.errors import FunctionNotFoundError
from statestore import (
    RunConflictError,
    RunEndedError,
    RunNotFoundError,
    StateStore,
    codec,
)
from statestore.backends.fs import FsColdTier
from statestore.backends.sqlite import SqliteHotTier

MISC = Path(__file__).parent / "workloads" / "misc.py"

# Random hex: zstd cannot squeeze it under the 64-byte inline limit.
BIG = secrets.token_hex(2000)


def cold_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def cold_root(tmp_path: Path) -> Path:
    return tmp_path / "cold"


@pytest.fixture
def app(tmp_path: Path, cold_root: Path) -> Iterator[App]:
    store = StateStore(
        SqliteHotTier(tmp_path / "hot.db", inline_limit=64), FsColdTier(cold_root, fsync=False)
    )
    made = App("refusals", store=store)

    @made.durable()
    def echo(ctx: Context, value: Any) -> Any:
        return value

    @made.durable()
    def other(ctx: Context, value: Any) -> Any:
        return value

    yield made
    made.close()


def test_the_setup_does_send_large_values_to_the_cold_tier(app: App, cold_root: Path) -> None:
    # Guards the tests below: were BIG inlined, an empty cold tier would prove nothing.
    app.start("echo", BIG, run_id="control")
    assert cold_files(cold_root)


def test_a_signal_to_an_unknown_run_writes_no_blob(app: App, cold_root: Path) -> None:
    with pytest.raises(RunNotFoundError):
        app.signal("nobody", "go", BIG)
    assert cold_files(cold_root) == []


def test_a_signal_to_an_ended_run_writes_no_blob(app: App, cold_root: Path) -> None:
    app.start("echo", 1, run_id="ended")
    app.cancel("ended")
    with pytest.raises(RunEndedError):
        app.signal("ended", "go", BIG)
    assert cold_files(cold_root) == []
    assert app.store.hot.pending_signals("ended") == []


@pytest.mark.parametrize("name", ["", "n" * 129])
def test_a_signal_with_a_bad_name_writes_no_blob(app: App, cold_root: Path, name: str) -> None:
    app.start("echo", 1, run_id="live")
    with pytest.raises(ValueError, match="1-128 characters"):
        app.signal("live", name, BIG)
    assert cold_files(cold_root) == []
    assert app.store.hot.pending_signals("live") == []


def test_an_accepted_large_signal_still_goes_cold(app: App, cold_root: Path) -> None:
    app.start("echo", 1, run_id="live")
    signal = app.signal("live", "go", BIG)
    assert [s.signal_id for s in app.store.hot.pending_signals("live")] == [signal.signal_id]
    assert cold_files(cold_root)


@pytest.mark.parametrize(
    ("function", "message"),
    [("echo", "a different input"), ("other", "function 'echo'")],
)
def test_a_conflicting_start_writes_no_blob(
    app: App, cold_root: Path, function: str, message: str
) -> None:
    app.start("echo", {"small": 1}, run_id="taken")
    before = app.store.hot.get_run("taken")
    with pytest.raises(RunConflictError, match=message):
        app.start(function, {"small": 1, "big": BIG}, run_id="taken")
    assert cold_files(cold_root) == []
    assert app.store.hot.get_run("taken") == before


def test_a_start_of_an_unknown_function_writes_no_blob(app: App, cold_root: Path) -> None:
    with pytest.raises(FunctionNotFoundError):
        app.start("nosuch", BIG, run_id="r1")
    assert cold_files(cold_root) == []


def test_an_idempotent_repeat_of_a_large_start_writes_nothing_new(
    app: App, cold_root: Path
) -> None:
    app.start("echo", {"big": BIG}, run_id="again")
    files = cold_files(cold_root)
    record = app.store.hot.get_run("again")
    assert app.start("echo", {"big": BIG}, run_id="again") == "again"
    assert cold_files(cold_root) == files
    assert app.store.hot.get_run("again") == record


# ---------------------------------------------------------------------- canonical input identity


def test_a_start_with_the_keys_reordered_is_the_same_start(app: App) -> None:
    first = {"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": "z"}}
    reordered = {"a": {"x": "z", "y": [1, {"p": 3, "q": 2}]}, "b": 1}
    assert list(first) != list(reordered)
    app.start("echo", first, run_id="same")
    record = app.store.hot.get_run("same")
    assert app.start("echo", reordered, run_id="same") == "same"
    assert app.store.hot.get_run("same") == record
    # A different value under the same keys is still a conflict.
    with pytest.raises(RunConflictError):
        app.start("echo", {**reordered, "b": 2}, run_id="same")


def test_a_run_created_before_canonical_hashing_still_accepts_its_retry(app: App) -> None:
    plain = {"b": 1, "a": 2}
    legacy = codec.content_hash(codec.pack(plain))
    assert legacy != codec.canonical_hash(plain)
    app.store.hot.create_run("old", "echo", input=codec.encode(plain), input_hash=legacy)
    assert app.start("echo", plain, run_id="old") == "old"


def test_canonical_hash_ignores_key_order_at_every_depth() -> None:
    a = {"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": 2}}
    b = {"a": {"x": 2, "y": [1, {"p": 3, "q": 2}]}, "b": 1}
    assert codec.canonical_hash(a) == codec.canonical_hash(b)
    assert codec.canonical_hash(a) != codec.canonical_hash({**b, "b": 2})


def test_canonical_hash_sorts_keys_of_mixed_types_deterministically() -> None:
    items: list[tuple[Any, Any]] = [(1, "i"), ("1", "s"), (b"1", "b"), (None, "n"), (2.5, "f")]
    hashes = {
        codec.canonical_hash(dict(order)) for order in (items, items[::-1], items[2:] + items[:2])
    }
    assert len(hashes) == 1


def test_canonical_hash_tells_maps_from_lists_of_pairs() -> None:
    assert codec.canonical_hash({"a": 1}) != codec.canonical_hash([["a", 1]])
    assert codec.canonical_hash({}) != codec.canonical_hash([])


def test_canonical_hash_refuses_what_cannot_be_stored() -> None:
    with pytest.raises(TypeError, match="cannot be stored"):
        codec.canonical_hash({"a": {1, 2}})


# ---------------------------------------------------------------------- the CLI


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def urls(tmp_path: Path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path / 'cli.db'}?inline_limit=64", f"file://{tmp_path / 'cli-cold'}"


@pytest.fixture
def cli_app(urls: tuple[str, str]) -> Iterator[App]:
    """An app on the CLI's store, with a function named like the CLI target's."""
    made = App("cli-refusals", hot_url=urls[0], cold_url=urls[1])

    @made.durable("approval")
    def approval(ctx: Context, who: str) -> str:
        return who

    yield made
    made.close()


def test_cli_run_with_a_conflicting_run_id_writes_no_blob(
    tmp_path: Path, urls: tuple[str, str], cli_app: App
) -> None:
    cli_app.start("approval", "bob", run_id="taken")
    cold = tmp_path / "cli-cold"
    assert cold_files(cold) == []
    proc = cli(
        "run",
        f"{MISC}:approval",
        "--run-id",
        "taken",
        "--input",
        json.dumps(BIG),
        "--hot",
        urls[0],
        "--cold",
        urls[1],
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "already exists" in " ".join(proc.stderr.split())
    assert cold_files(cold) == []


@pytest.mark.parametrize(
    ("run_id", "name", "message"),
    [
        ("nobody", "go", "does not exist"),
        ("ended", "go", "has cancelled"),
        ("live", "n" * 129, "1-128 characters"),
    ],
)
def test_cli_refused_signals_write_no_blob(
    tmp_path: Path, urls: tuple[str, str], cli_app: App, run_id: str, name: str, message: str
) -> None:
    cli_app.start("approval", "bob", run_id="live")
    cli_app.start("approval", "eve", run_id="ended")
    cli_app.cancel("ended")
    cold = tmp_path / "cli-cold"
    proc = cli(
        "runs",
        "signal",
        run_id,
        name,
        "--payload",
        json.dumps(BIG),
        "--hot",
        urls[0],
        "--cold",
        urls[1],
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert cold_files(cold) == []
    assert cli_app.store.hot.pending_signals("live") == []
    assert cli_app.store.hot.pending_signals("ended") == []
