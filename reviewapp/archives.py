"""Read image files out of an uploaded .zip without trusting it."""

import posixpath
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .imaging import sizes_apart, too_big_reason

__all__ = [
    "ArchiveMember",
    "ArchiveRejected",
    "is_zip",
    "iter_zip_members",
    "too_many_entries",
    "zip_entry_count",
]

CHUNK = 1 << 16
# End Of Central Directory: fixed 22 bytes, then a comment of up to 65,535 bytes.
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"


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


def zip_entry_count(fileobj: BinaryIO) -> int | None:
    """The entry count the archive's end record declares; None if it has none (not a zip).

    zipfile offers no way to read it without parsing every central directory record
    (about 1 s for 100,000 entries), which is the work a limit on entries must spare.
    """
    position = fileobj.tell()
    try:
        fileobj.seek(0, 2)
        size = fileobj.tell()
        start = max(0, size - _EOCD.size - 0xFFFF)
        fileobj.seek(start)
        tail = fileobj.read()
        at = tail.rfind(_EOCD_SIGNATURE)
        while at >= 0 and len(tail) - at < _EOCD.size:
            at = tail.rfind(_EOCD_SIGNATURE, 0, at)
        if at < 0:
            return None
        count = _EOCD.unpack_from(tail, at)[4]
        if count != 0xFFFF:
            return count
        # Zip64: the real count is in the zip64 end record, just before its locator.
        locator_at = start + at - _ZIP64_LOCATOR.size
        record_at = locator_at - _ZIP64_EOCD.size
        if record_at < 0:
            return count
        fileobj.seek(record_at)
        head = fileobj.read(_ZIP64_EOCD.size + _ZIP64_LOCATOR.size)
        record, locator = head[: _ZIP64_EOCD.size], head[_ZIP64_EOCD.size :]
        if (
            _ZIP64_LOCATOR.unpack(locator)[0] != _ZIP64_LOCATOR_SIGNATURE
            or _ZIP64_EOCD.unpack(record)[0] != _ZIP64_EOCD_SIGNATURE
        ):
            return count
        return _ZIP64_EOCD.unpack(record)[7]
    except (OSError, struct.error):
        return None
    finally:
        fileobj.seek(position)


def too_many_entries(count: int, limit: int) -> str:
    """The reason an archive of ``count`` entries is refused, or "" within the limit."""
    if count <= limit:
        return ""
    return (
        f"the archive has {count:,} entries, more than the limit of {limit:,} "
        "(LOUPE_MAX_ZIP_ENTRIES)"
    )


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
    max_archive_bytes: int | None = None,
) -> Iterator[ArchiveMember]:
    """Yield each file of the archive, with its bytes or the reason it was refused."""
    if max_archive_bytes is not None:
        position = fileobj.tell()
        size = fileobj.seek(0, 2)
        fileobj.seek(position)
        if size > max_archive_bytes:
            shown, allowed = sizes_apart(size, max_archive_bytes)
            raise ArchiveRejected(
                f"the archive is {shown}, over the limit of {allowed} (LOUPE_MAX_ZIP_BYTES)"
            )
    # Before ZipFile, which parses every entry: too many is refused from the end record.
    if reason := too_many_entries(zip_entry_count(fileobj) or 0, max_entries):
        raise ArchiveRejected(reason)
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveRejected(f"not a readable zip archive: {exc}") from exc
    with archive:
        # The end record may understate the count; the parsed directory cannot.
        if reason := too_many_entries(len(archive.infolist()), max_entries):
            raise ArchiveRejected(reason)
        infos = [info for info in archive.infolist() if not info.is_dir()]
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
            if reason := too_big_reason(info.file_size, max_member_bytes):
                yield ArchiveMember(name, folder, None, reason)
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
