"""Small images generated in memory; tests never need files from disk."""

import io
import random
import struct
import zlib

from PIL import Image as PILImage

__all__ = ["image_bytes", "many_entries_zip", "png_header", "zip_bytes"]


def image_bytes(
    color=None,
    *,
    size=(24, 16),
    format="PNG",
    mode="RGB",
    seed=None,
    **save_kwargs,
) -> bytes:
    """A real image of ``size``; a seed or a colour makes each one distinct."""
    rng = random.Random(seed)
    if color is None:
        color = tuple(rng.randrange(256) for _ in range(3))
    image = PILImage.new("RGB", size, color)
    # A few random pixels so two seeds never give the same bytes.
    for _ in range(8):
        image.putpixel(
            (rng.randrange(size[0]), rng.randrange(size[1])),
            tuple(rng.randrange(256) for _ in range(3)),
        )
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format, **save_kwargs)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], *, compression=None) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression or zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def many_entries_zip(count: int, data: bytes = b"x") -> bytes:
    """A stored zip of ``count`` entries ``0.png``, ``1.png``... each holding ``data``.

    Written by hand: zipfile takes seconds for 100,000 entries. Past 65,535 entries it has
    the zip64 end records, as zipfile would write.
    """
    crc = zlib.crc32(data)
    local, central, offset = [], [], 0
    for index in range(count):
        name = f"{index}.png".encode()
        header = struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data), len(name), 0
        )
        local.append(header + name + data)
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                0,
                0,
                0,
                crc,
                len(data),
                len(data),
                len(name),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + name
        )
        offset += len(header) + len(name) + len(data)
    directory = b"".join(central)
    end = b""
    short_count = count
    if count > 0xFFFF:
        end = struct.pack(
            "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), offset
        )
        end += struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + len(directory), 1)
        short_count = 0xFFFF
    end += struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, short_count, short_count, len(directory), offset, 0
    )
    return b"".join(local) + directory + end


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (1-bit grey) but holds no pixel rows:
    enough for any size check, a few dozen bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">L", len(body)) + kind + body + struct.pack(">L", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">2L5B", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
