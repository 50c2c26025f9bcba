"""Read image files out of an uploaded .zip without trusting it."""

import posixpath
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["ArchiveMember", "ArchiveRejected", "is_zip", "iter_zip_members"]

CHUNK = 1 << 16


class ArchiveRejected(Exception):
    """The whole archive is refused; ``str(exc)`` says why."""


@dataclass(frozen=True)
class ArchiveMember:
    name: str  # path inside the archive
    folder: str  # name of its parent folder, "" at the top
    data: bytes | None  # None when rejected
    reason: str = ""


def is_zip(fileobj: BinaryIO) -> bool:
    position = fileobj.tell()
    try:
        return zipfile.is_zipfile(fileobj)
    finally:
        fileobj.seek(position)


def _unsafe_path(name: str) -> bool:
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in name.split("/")


def _is_metadata(name: str) -> bool:
    parts = name.split("/")
    return parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts if part)


def iter_zip_members(
    fileobj: BinaryIO,
    *,
    max_entries: int,
    max_total_bytes: int,
    max_member_bytes: int,
    max_ratio: int,
) -> Iterator[ArchiveMember]:
    """Yield each file of the archive, with its bytes or the reason it was refused."""
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveRejected(f"not a readable zip archive: {exc}") from exc
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > max_entries:
            raise ArchiveRejected(
                f"{len(infos):,} files in the archive, over the limit of {max_entries:,}"
            )
        declared = sum(info.file_size for info in infos)
        if declared > max_total_bytes:
            raise ArchiveRejected(
                f"the archive unpacks to {declared:,} bytes, over the limit of "
                f"{max_total_bytes:,}; possible zip bomb"
            )
        for info in infos:
            name = info.filename
            if _unsafe_path(name):
                yield ArchiveMember(name, "", None, "unsafe path in archive (zip slip)")
                continue
            if _is_metadata(name):
                continue
            folder = posixpath.basename(posixpath.dirname(name))
            if info.file_size > max_member_bytes:
                yield ArchiveMember(
                    name, folder, None, f"file is {info.file_size:,} bytes, over the limit"
                )
                continue
            if info.compress_size and info.file_size / info.compress_size > max_ratio:
                yield ArchiveMember(
                    name,
                    folder,
                    None,
                    f"compression ratio {info.file_size // info.compress_size}:1 is "
                    f"over {max_ratio}:1; possible zip bomb",
                )
                continue
            yield _read_member(archive, info, folder, max_member_bytes)


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, folder: str, limit: int
) -> ArchiveMember:
    # Read in chunks and stop at the limit: the declared sizes may lie.
    chunks, size = [], 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    return ArchiveMember(info.filename, folder, None, "file is over the size limit")
                chunks.append(chunk)
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
        return ArchiveMember(info.filename, folder, None, f"cannot be extracted: {exc}")
    return ArchiveMember(info.filename, folder, b"".join(chunks))
