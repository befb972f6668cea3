"""Signal edges on every hot backend, and the file cold tier's case-safe run directories.

- Signal ids from two processes never collide, even with the same pid (every container is pid 1)
  at the same instant: a collision made a backend keep one signal and drop the other silently.
- A signal whose run ends (or is deleted) while it is written is not kept and the sender is told;
  one a leg took before the run ended was delivered, and the sender is told that.
- Run ids ``A`` and ``a`` get directories whose names differ even ignoring case.
"""

from __future__ import annotations

import os
import time
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from statestore import BlobRef, HotTier, RunEndedError, RunNotFoundError, Signal, codec
from statestore.backends.fs import FsColdTier, dir_name
from tests.statestore.conftest import HotFactory

FROZEN_NS = 1_700_000_000_000_000_000


def freeze_time_ns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Freeze the wall clock the hot tier reads for signal ids (and only that module's)."""
    import statestore.hot

    fake = types.SimpleNamespace(
        **{n: getattr(time, n) for n in dir(time) if not n.startswith("_")}
    )
    fake.time_ns = lambda: FROZEN_NS
    monkeypatch.setattr(statestore.hot, "time", fake)


def test_two_processes_with_one_pid_at_one_instant_keep_both_signals(
    make_hot: HotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_hot(), make_hot()  # two containers: two handles, fresh counters
    first.create_run("r1", "fn")
    freeze_time_ns(monkeypatch)
    monkeypatch.setattr(os, "getpid", lambda: 1)

    a = first.put_signal("r1", "go", b"from-a")
    b = second.put_signal("r1", "go", b"from-b")

    assert a.signal_id != b.signal_id
    pending = first.pending_signals("r1", "go")
    assert sorted(s.payload for s in pending if isinstance(s.payload, bytes)) == [
        b"from-a",
        b"from-b",
    ]


def test_one_handles_signals_keep_their_order_on_a_frozen_clock(
    make_hot: HotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    hot = make_hot()
    hot.create_run("r1", "fn")
    freeze_time_ns(monkeypatch)
    sent = [hot.put_signal("r1", "go", str(i).encode()).signal_id for i in range(5)]
    assert len(set(sent)) == 5
    assert [s.signal_id for s in hot.pending_signals("r1", "go")] == sent


def test_signal_ids_are_fixed_width_and_free_of_key_separators(hot: HotTier) -> None:
    hot.create_run("r1", "fn")
    ids = [hot.put_signal("r1", "go").signal_id for _ in range(3)]
    assert len({len(i) for i in ids}) == 1
    assert not any(":" in i or "#" in i for i in ids)


def end_on_insert(
    monkeypatch: pytest.MonkeyPatch, hot: HotTier, act: Any, *, after: bool = False
) -> None:
    """Make ``hot``'s next signal insert run ``act`` just before (or after) it writes."""
    original = hot._insert_signal

    def insert(signal: Signal) -> None:
        if not after:
            act()
        original(signal)
        if after:
            act()

    monkeypatch.setattr(hot, "_insert_signal", insert)


def test_a_signal_to_a_run_that_ends_while_it_is_written_is_refused_and_not_kept(
    make_hot: HotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, other = make_hot(), make_hot()
    sender.create_run("r1", "fn")
    # The run passes put_signal's first look, then ends before the signal lands.
    end_on_insert(monkeypatch, sender, lambda: other.cancel("r1"))

    with pytest.raises(RunEndedError, match="cancelled"):
        sender.put_signal("r1", "go", b"late")

    assert sender.pending_signals("r1") == []
    assert other.get_run("r1").status.value == "cancelled"


def test_a_signal_taken_before_its_run_ended_counts_as_delivered(
    make_hot: HotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, leg = make_hot(), make_hot()
    sender.create_run("r1", "fn")
    token = leg.acquire_lease("r1", "leg", timedelta(seconds=30)).token

    def take_and_finish() -> None:
        assert leg.take_signal("r1", token, "go", 0) is not None
        leg.complete("r1", token, codec.encode("done"))

    end_on_insert(monkeypatch, sender, take_and_finish, after=True)

    signal = sender.put_signal("r1", "go", b"on-time")

    journal = leg.read_journal("r1")
    assert [(e.kind.value, e.meta["signal_id"]) for e in journal] == [("signal", signal.signal_id)]
    assert sender.get_run("r1").status.value == "succeeded"


def test_a_signal_to_a_run_deleted_while_it_is_written_is_not_kept(
    make_hot: HotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, other = make_hot(), make_hot()
    sender.create_run("r1", "fn")
    end_on_insert(monkeypatch, sender, lambda: other.delete_run("r1"))

    with pytest.raises(RunNotFoundError):
        sender.put_signal("r1", "go", b"orphan")

    assert sender.pending_signals("r1") == []


# ---------------------------------------------------------------------- file cold tier


def test_run_ids_differing_in_case_get_directories_differing_ignoring_case(
    tmp_path: Path,
) -> None:
    tier = FsColdTier(tmp_path / "cold", fsync=False)
    upper, lower = tier.put("Run-A", b"upper"), tier.put("run-a", b"lower")
    dirs = {
        rid: tier._path(rid, ref.sha256).parent.parent
        for rid, ref in (("Run-A", upper), ("run-a", lower))
    }
    assert dirs["Run-A"].name.lower() != dirs["run-a"].name.lower()
    assert dirs["run-a"].name == "run-a"  # lowercase ids keep their old directory

    assert tier.delete_run("Run-A") == 1
    assert tier.get("run-a", lower) == b"lower"


def test_directory_names_are_one_to_one_and_case_free() -> None:
    ids = ["a", "A", "aB", "Ab", "AB", "ab", "a-b_C9", "A-B_c9", "_", "-"]
    names = [dir_name(i) for i in ids]
    assert len({n.lower() for n in names}) == len(ids)
    assert all(n == n.lower() for n in names)


def _write_legacy(root: Path, run_id: str, data: bytes) -> str:
    sha = codec.content_hash(data)
    folder = root / "runs" / run_id / "blobs"
    folder.mkdir(parents=True)
    (folder / sha).write_bytes(data)
    return sha


def test_blobs_in_the_old_layout_are_still_read_and_deleted(tmp_path: Path) -> None:
    root = tmp_path / "cold"
    tier = FsColdTier(root, fsync=False)
    sha = _write_legacy(root, "Legacy", b"old blob")
    ref = BlobRef(sha256=sha, size=len(b"old blob"), codec=codec.CODEC_NAME)
    assert tier.get("Legacy", ref) == b"old blob"
    assert tier.delete_run("Legacy") == 1
    assert not (root / "runs" / "Legacy").exists()


def test_an_old_layout_folder_that_is_also_another_runs_is_left_alone(tmp_path: Path) -> None:
    # What a case-insensitive filesystem does, made by hand: "runs/a" is "runs/A".
    root = tmp_path / "cold"
    tier = FsColdTier(root, fsync=False)
    sha = _write_legacy(root, "A", b"shared")
    (root / "runs" / "a").symlink_to(root / "runs" / "A", target_is_directory=True)

    tier.delete_run("A")

    assert (root / "runs" / "A" / "blobs" / sha).read_bytes() == b"shared"
