"""Cold tier in a local directory: ``ROOT/runs/<run_id>/blobs/<sha256>``.

Writes go to a temporary file in the same directory, are fsynced, then renamed into place, so a
reader (or a process killed mid-write) never sees a partial blob under its final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from statestore.cold import ColdTier
from statestore.errors import BlobNotFoundError, StoreUnavailableError


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

    def _path(self, run_id: str, sha256: str) -> Path:
        return self.root / "runs" / run_id / "blobs" / sha256

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
            raise StoreUnavailableError(f"cannot write blob {path}: {exc}") from exc

    def _get(self, run_id: str, sha256: str) -> bytes:
        path = self._path(run_id, sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob at {path}") from None
        except OSError as exc:
            raise StoreUnavailableError(f"cannot read blob {path}: {exc}") from exc

    def _delete_run(self, run_id: str) -> int:
        folder = self.root / "runs" / run_id
        if not folder.exists():
            return 0
        count = sum(1 for _ in (folder / "blobs").glob("*"))
        shutil.rmtree(folder, ignore_errors=True)
        return count
