"""Cold tier in a local directory: ``ROOT/runs/<dir>/blobs/<sha256>``.

``<dir>`` is the run id with each uppercase letter written as ``+`` and the letter in lowercase
(``Run-A1`` -> ``+run-+a1``; an id of lowercase letters, digits, ``_`` and ``-`` is unchanged).
Run ids are case-sensitive but the default filesystems of macOS and Windows are not: with the
id itself as the name, runs ``A`` and ``a`` shared one directory, so deleting one deleted the
other's blobs. ``+`` is outside the run-id alphabet, so the mapping is one-to-one and two ids
never give names that differ only in case.

Blobs written before this layout, under ``ROOT/runs/<run_id>/``, are still read there when
absent from the new place, and removed with their run where that cannot touch another run's.

Writes go to a temporary file in the same directory, are fsynced, then renamed into place, so a
reader (or a process killed mid-write) never sees a partial blob under its final name.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from statestore.cold import ColdTier
from statestore.errors import BlobNotFoundError, StoreFullError, StoreUnavailableError

# No room, or not allowed to write: retrying will not help until someone frees or fixes it.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})


class FsColdTier(ColdTier):
    scheme = "file"

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot create cold-tier directory {self.root}: {exc}"
            ) from exc

    def _folder(self, run_id: str) -> Path:
        return self.root / "runs" / dir_name(run_id)

    def _path(self, run_id: str, sha256: str) -> Path:
        return self._folder(run_id) / "blobs" / sha256

    def _legacy_folder(self, run_id: str) -> Path | None:
        """Where blobs of ``run_id`` went before the case-safe layout, if somewhere else."""
        return self.root / "runs" / run_id if dir_name(run_id) != run_id else None

    def key(self, run_id: str, sha256: str) -> str:
        return str(self._path(run_id, sha256))

    def _put(self, run_id: str, sha256: str, data: bytes) -> None:
        path = self._path(run_id, sha256)
        if path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    if self.fsync:
                        fh.flush()
                        os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            if self.fsync:
                dir_fd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            if exc.errno in _NO_ROOM:
                raise StoreFullError(f"cannot write blob {path}: {exc}") from exc
            raise StoreUnavailableError(f"cannot write blob {path}: {exc}") from exc

    def _get(self, run_id: str, sha256: str) -> bytes:
        path = self._path(run_id, sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreUnavailableError(f"cannot read blob {path}: {exc}") from exc
        legacy = self._legacy_folder(run_id)
        if legacy is not None:
            # On a case-insensitive filesystem this may be a same-named run's folder; a blob
            # found there has the requested hash (ColdTier.get checks it), so it is the value.
            try:
                return (legacy / "blobs" / sha256).read_bytes()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreUnavailableError(f"cannot read blob {path}: {exc}") from exc
        raise BlobNotFoundError(f"no blob at {path}") from None

    def _delete_run(self, run_id: str) -> int:
        count = _remove(self._folder(run_id))
        legacy = self._legacy_folder(run_id)
        if legacy is not None and not _shared_by_case(legacy):
            count += _remove(legacy)
        return count


def dir_name(run_id: str) -> str:
    """The run's directory name: uppercase letters escaped as ``+`` and the lowercase letter."""
    return "".join(f"+{c.lower()}" if "A" <= c <= "Z" else c for c in run_id)


def _remove(folder: Path) -> int:
    if not folder.exists():
        return 0
    count = sum(1 for _ in (folder / "blobs").glob("*"))
    shutil.rmtree(folder, ignore_errors=True)
    return count


def _shared_by_case(legacy: Path) -> bool:
    """Whether the old-layout folder may also hold another run's blobs.

    It may when the filesystem ignores case: ``runs/A`` is then also ``runs/a``, the folder of
    run ``a`` (old layout or new). Such a folder is left in place (garbage at worst).
    """
    twin = legacy.with_name(legacy.name.swapcase())
    try:
        return twin.exists() and os.path.samefile(legacy, twin)
    except OSError:
        return True
