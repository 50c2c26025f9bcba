"""Small images generated in memory; tests never need files from disk."""

import io
import random

from PIL import Image as PILImage

__all__ = ["image_bytes", "zip_bytes"]


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
