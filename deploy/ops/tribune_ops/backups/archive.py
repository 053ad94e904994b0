"""The backup folder's files: gzip files of concatenated BSON documents (mongodump's
format), written with their SHA-256 and size, read back as raw documents."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from tribune_ops.backups.domain import MANIFEST

_RAW: CodecOptions = CodecOptions(document_class=RawBSONDocument)


class _Hashing(io.RawIOBase):
    """A file that hashes and counts what goes through it."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = bytes(data)
        self.sha.update(view)
        self.size += len(view)
        self.target.write(view)
        return len(view)


class CollectionWriter:
    """Writes one collection's file; ``sha256`` and ``size`` once closed. Written under a
    temporary name and renamed when complete, so a copy cut short leaves no file that
    looks whole."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._partial = path.with_name(path.name + ".partial")
        self._file = self._partial.open("wb")
        self._hashing = _Hashing(self._file)
        # mtime 0: the same documents give the same bytes (and the same checksum)
        self._gzip = gzip.GzipFile(fileobj=self._hashing, mode="wb", mtime=0)
        self.documents = 0
        self.sha256 = ""
        self.size = 0

    def write(self, raw: bytes | memoryview) -> None:
        self._gzip.write(raw)
        self.documents += 1

    def close(self) -> None:
        self._gzip.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._partial, self.path)
        self.sha256 = self._hashing.sha.hexdigest()
        self.size = self._hashing.size

    def abort(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


def digest(folder: Path, name: str) -> tuple[int, str] | None:
    """(size, SHA-256) of a file of the backup, read in chunks; None if missing."""
    path = folder / name
    if not path.is_file():
        return None
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def documents(folder: Path, name: str) -> Iterator[RawBSONDocument]:
    """The raw documents of a collection's file, streamed."""
    with gzip.open(folder / name, mode="rb") as stream:
        yield from bson.decode_file_iter(cast(BinaryIO, stream), codec_options=_RAW)


def prepare_folder(folder: Path) -> bool:
    """Make ``folder`` for a backup: False if it exists and holds something already."""
    if folder.exists() and any(folder.iterdir()):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    return True


def write_manifest(folder: Path, text: str) -> None:
    """Written last and atomically: a folder without a manifest is no backup."""
    partial = folder / (MANIFEST + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, folder / MANIFEST)


def read_manifest(folder: Path) -> str | None:
    path = folder / MANIFEST
    return path.read_text(encoding="utf-8") if path.is_file() else None
