from __future__ import annotations

from pathlib import Path

import pytest

from statestore import InvalidStoreUrlError, open_cold, open_hot, open_store
from statestore.backends.fs import FsColdTier
from statestore.backends.sqlite import SqliteHotTier


@pytest.mark.parametrize(
    "url", ["mysql://x", "nothing", "sqlite://relative.db", "dynamodb://?region=x", "redis"]
)
def test_bad_hot_urls_list_the_accepted_schemes(url: str) -> None:
    with pytest.raises(InvalidStoreUrlError, match="accepted: sqlite:///PATH, redis://"):
        open_hot(url)


@pytest.mark.parametrize("url", ["ftp://x", "s3://", "file://"])
def test_bad_cold_urls_list_the_accepted_schemes(url: str) -> None:
    with pytest.raises(InvalidStoreUrlError, match="accepted: file://PATH, s3://"):
        open_cold(url)


def test_defaults_land_under_dot_outlast(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTLAST_HOT_URL", raising=False)
    monkeypatch.delenv("OUTLAST_COLD_URL", raising=False)
    store = open_store()
    assert isinstance(store.hot, SqliteHotTier) and isinstance(store.cold, FsColdTier)
    assert (workdir / ".outlast" / "hot.db").exists()
    assert (workdir / ".outlast" / "cold").is_dir()


def test_environment_picks_the_store(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAST_HOT_URL", f"sqlite:///{workdir}/elsewhere.db")
    monkeypatch.setenv("OUTLAST_COLD_URL", f"file://{workdir}/blobs")
    store = open_store()
    assert (workdir / "elsewhere.db").exists() and (workdir / "blobs").is_dir()
    store.close()


def test_sqlite_full_sync_option(tmp_path: Path) -> None:
    tier = open_hot(f"sqlite:///{tmp_path}/h.db?synchronous=full&inline_limit=1000")
    assert isinstance(tier, SqliteHotTier)
    assert tier.synchronous == "FULL" and tier.inline_limit == 1000
    with pytest.raises(InvalidStoreUrlError, match="not an integer"):
        open_hot(f"sqlite:///{tmp_path}/h.db?inline_limit=big")
