"""The object store of payout files (DESIGN.md section 3): a local folder under
PAYGATE_DATA_DIR on the embedded default; any store with `put` and `get` (an S3-compatible one
in scale-out deployments) fits the same protocol."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path
from typing import Protocol

from paygate.config import Settings

_KEY = re.compile(r"^[a-z0-9_]+(/[A-Za-z0-9_.-]+)*$")


class ObjectStore(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...


class LocalObjectStore:
    """Objects as files under `root`; a put replaces the file atomically (write, fsync,
    rename), so a reader never sees half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key:
            raise ValueError("invalid object key")
        return self.root / key

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(key), data)

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, self._path(key))

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @staticmethod
    def _get(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None


def object_store(settings: Settings) -> ObjectStore:
    return LocalObjectStore(settings.data_dir / "objects")
