"""Record logs (``statestore/logs.py``) on every hot tier: dense positions under racing writers,
a stale tail after delete and re-create, cold references, labels, listing, bad ids."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from statestore import BlobRef, CorruptStateError, InvalidRunIdError, open_hot
from statestore.logs import pack_payload, unpack_payload
from tests.statestore.conftest import HotFactory

REF = BlobRef(sha256="ab" * 32, size=70_000, codec="raw")


def test_appends_take_dense_positions_and_read_from_any_position(make_hot: HotFactory) -> None:
    hot = make_hot()
    assert hot.read_log("lg-a") == []
    assert [hot.append_log("lg-a", f"r{i}".encode(), label="thread a") for i in range(5)] == [
        0,
        1,
        2,
        3,
        4,
    ]
    hot.append_log("lg-a", REF)
    records = hot.read_log("lg-a")
    assert [r.position for r in records] == list(range(6))
    assert [r.payload for r in records[:5]] == [f"r{i}".encode() for i in range(5)]
    assert records[5].payload == REF
    assert [r.payload for r in hot.read_log("lg-a", start=4)] == [b"r4", REF]
    assert hot.read_log("lg-a", start=6) == []
    assert [r.position for r in hot.read_log("lg-a", start=1, limit=2)] == [1, 2]
    assert hot.read_log("lg-a", start=1, limit=0) == []
    assert [r.position for r in hot.read_log("lg-a", start=4, limit=10)] == [4, 5]
    # Another handle (another process) sees the same log and appends after it.
    other = make_hot()
    assert other.append_log("lg-a", b"from another handle") == 6
    assert hot.append_log("lg-a", b"and back") == 7  # its remembered tail was stale: re-read
    assert [r.payload for r in hot.read_log("lg-a", start=6)] == [
        b"from another handle",
        b"and back",
    ]


def test_racing_writers_never_overwrite_each_other(make_hot: HotFactory) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    handles = [make_hot() for _ in range(3)]
    per_thread = 15
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(per_thread):
                handles[n % len(handles)].append_log("lg-race", f"{n}:{i}".encode())
                if rng.random() < 0.2:
                    handles[n % len(handles)].read_log("lg-race")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"seed {seed}: {errors[0]!r}"
    records = handles[0].read_log("lg-race")
    assert [r.position for r in records] == list(range(4 * per_thread)), f"seed {seed}"
    payloads = [r.payload for r in records if isinstance(r.payload, bytes)]
    assert sorted(payloads) == sorted(f"{n}:{i}".encode() for n in range(4) for i in range(15))
    for n in range(4):  # each writer's records keep its order
        mine = [p for p in payloads if isinstance(p, bytes) and p.startswith(f"{n}:".encode())]
        assert mine == [f"{n}:{i}".encode() for i in range(per_thread)], f"seed {seed}"


def test_delete_and_recreate_with_a_stale_tail_leaves_no_gap(make_hot: HotFactory) -> None:
    writer, deleter = make_hot(), make_hot()
    for i in range(3):
        writer.append_log("lg-del", f"old {i}".encode(), label="first")
    deleter.delete_log("lg-del")
    assert deleter.read_log("lg-del") == []
    assert deleter.list_logs("lg-del") == []
    # The writer still remembers tail 3: its append must land at 0, not leave 0-2 empty.
    assert writer.append_log("lg-del", b"new 0", label="second") == 0
    assert [r.payload for r in deleter.read_log("lg-del")] == [b"new 0"]
    assert [(i.log_id, i.label) for i in deleter.list_logs("lg-del")] == [("lg-del", "second")]
    deleter.delete_log("lg-never-made")  # deleting nothing is fine


def test_labels_and_listing_by_prefix(hot_kind: str, make_hot: HotFactory) -> None:
    hot = make_hot()
    hot.append_log("lgt-2", b"x", label="thread two: any text, even / and #")
    hot.append_log("lgt-1", b"x", label="one")
    hot.append_log("lgt-1", b"y", label="ignored after the first record")
    hot.append_log("other-1", b"x", label="other")
    listed = hot.list_logs("lgt-")
    assert [(i.log_id, i.label) for i in listed] == [
        ("lgt-1", "one"),
        ("lgt-2", "thread two: any text, even / and #"),
    ]
    assert {i.log_id for i in hot.list_logs()} >= {"lgt-1", "lgt-2", "other-1"}
    assert hot.list_runs() == []  # logs are not runs


def test_bad_ids_and_positions_are_refused_with_a_reason(make_hot: HotFactory) -> None:
    hot = make_hot()
    with pytest.raises(InvalidRunIdError, match="illegal run id 'a/b'"):
        hot.append_log("a/b", b"x")
    with pytest.raises(ValueError, match="a log position is 0 or more"):
        hot.read_log("lg-ok", start=-1)
    with pytest.raises(ValueError, match="a read limit is 0 or more, not -1"):
        hot.read_log("lg-ok", limit=-1)
    with pytest.raises(ValueError, match="a log label is at most 1024"):
        hot.append_log("lg-ok", b"x", label="x" * 2000)
    assert hot.read_log("lg-ok") == []  # nothing was written


def test_a_damaged_record_is_named() -> None:
    with pytest.raises(CorruptStateError, match="unknown tag") as caught:
        unpack_payload(b"\x07junk", tier="sqlite", log_id="lg-x", position=4)
    assert caught.value.key == "logs/lg-x/4"
    assert unpack_payload(pack_payload(REF), tier="t", log_id="l", position=0) == REF
    assert unpack_payload(pack_payload(b""), tier="t", log_id="l", position=0) == b""


def test_a_gap_in_a_sqlite_log_is_reported(tmp_path: Path) -> None:
    import sqlite3

    hot = open_hot(f"sqlite:///{tmp_path}/hot.db")
    for i in range(3):
        hot.append_log("lg-gap", f"{i}".encode())
    with sqlite3.connect(tmp_path / "hot.db") as conn:
        conn.execute("DELETE FROM log_records WHERE position = 1")
    conn.close()
    with pytest.raises(CorruptStateError, match="no record at position 1"):
        hot.read_log("lg-gap")
    hot.close()
