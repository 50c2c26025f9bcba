"""Decode and check one uploaded file with Pillow; make its RGB thumbnail."""

import io
import os
import warnings
from dataclasses import dataclass

from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

__all__ = [
    "ALLOWED_FORMATS",
    "DecodedImage",
    "ImageRejected",
    "decode_image",
    "sizes_apart",
    "to_rgb",
    "too_big_reason",
]

# Real formats we accept, whatever the file is called; MPO is a phone camera's JPEG.
ALLOWED_FORMATS = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
}
# Pillow opens MPO through its JPEG plugin.
OPEN_FORMATS = [name for name in ALLOWED_FORMATS if name != "MPO"]
EXIF_ORIENTATION = 0x0112

# Reuse freed image memory for the next decode instead of returning it to the kernel:
# fresh pages cost about a third of a photo's decode time. At most 16 x 4 MiB is kept.
if "PILLOW_BLOCKS_MAX" not in os.environ:
    PILImage.core.set_block_size(4 * 2**20)
    PILImage.core.set_blocks_max(16)


class ImageRejected(Exception):
    """The file is not an image we can take; ``str(exc)`` says why, for a person."""


@dataclass(frozen=True)
class DecodedImage:
    data: bytes  # what to store: the original bytes, or re-encoded when rotated
    extension: str
    format: str
    width: int
    height: int
    thumbnail: bytes  # RGB JPEG


def sizes_apart(size: int, limit: int) -> tuple[str, str]:
    """Both sizes for a person, never printed alike when they differ."""
    if max(size, limit) >= 2**20:
        for digits in (1, 2, 3):
            shown = f"{size / 2**20:.{digits}f} MiB", f"{limit / 2**20:.{digits}f} MiB"
            if shown[0] != shown[1] or size == limit:
                return shown
    return f"{size:,} bytes", f"{limit:,} bytes"


def too_big_reason(size: int, limit: int) -> str:
    """Why a file of ``size`` bytes (its real size) is refused; "" within ``limit``."""
    if size <= limit:
        return ""
    shown, allowed = sizes_apart(size, limit)
    return f"file is {shown}, over the limit of {allowed} (LOUPE_MAX_FILE_BYTES)"


def _open_past_pillow_limit(data: bytes) -> PILImage.Image | None:
    """Open with the format's plugin directly: ``Image.open`` applies Pillow's own pixel
    limit (Image.MAX_IMAGE_PIXELS), with its figures; past it, Loupe's limit must decide."""
    prefix = data[:16]
    for name in OPEN_FORMATS:
        factory, accept = PILImage.OPEN.get(name, (None, None))
        if factory is None or (accept is not None and not accept(prefix)):
            continue
        try:
            return factory(io.BytesIO(data), None)
        except (OSError, SyntaxError, ValueError, EOFError):
            continue
    return None


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Flatten any mode (palette, alpha, CMYK, 16-bit) to RGB, transparency on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v * (1 / 256)).convert("L")
    elif image.mode == "F":
        image = image.convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def decode_image(data: bytes, *, max_pixels: int, thumbnail_size: int = 256) -> DecodedImage:
    """Fully decode ``data``; raise ``ImageRejected`` with the reason if it is not usable."""
    if not data:
        raise ImageRejected("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            try:
                image = PILImage.open(io.BytesIO(data), formats=OPEN_FORMATS)
            except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
                image = _open_past_pillow_limit(data)
                if image is None:
                    raise
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise ImageRejected(
                    f"{image.width}x{image.height} is {pixels:,} pixels, over the limit "
                    f"of {max_pixels:,} (LOUPE_MAX_IMAGE_PIXELS); possible decompression bomb"
                )
            image.load()
    except ImageRejected:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise ImageRejected(f"possible decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected(
            "not an image Loupe can read (JPEG, PNG, WEBP, GIF, BMP or TIFF)"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"the image data is damaged or truncated: {exc}") from exc

    real_format = image.format
    extension = ALLOWED_FORMATS[real_format]
    stored = data
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        # Store upright pixels so training, thumbnails and the browser agree.
        image = ImageOps.exif_transpose(image)
        buffer = io.BytesIO()
        if extension == "jpg":
            to_rgb(image).save(buffer, "JPEG", quality=95)
        else:
            image.save(buffer, "PNG")
            extension, real_format = "png", "PNG"
        stored = buffer.getvalue()

    width, height = image.width, image.height
    # In place: the full-size pixels are not needed again, and a copy costs as much as a decode.
    thumb = to_rgb(image)
    thumb.thumbnail((thumbnail_size, thumbnail_size), reducing_gap=2.0)
    thumb_buffer = io.BytesIO()
    thumb.save(thumb_buffer, "JPEG", quality=85)
    return DecodedImage(
        data=stored,
        extension=extension,
        format=real_format,
        width=width,
        height=height,
        thumbnail=thumb_buffer.getvalue(),
    )
