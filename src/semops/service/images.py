"""Reading the QR code in a picture: PNG or JPEG only, bounded before any pixel is decoded.

Pillow opens dozens of formats, some through external programs (EPS and PDF through
Ghostscript) or rarely exercised decoders; an upload is attacker-chosen bytes. So the
format is read from the bytes themselves first (the PNG signature, the JPEG SOI marker)
and Pillow is told to try only those two decoders. Then the declared canvas is bounded
(a tiny PNG can declare a huge one), and exactly one QR code must be in the picture: two
could be a genuine request and a planted one. Used by the web wallet's upload and by the
command-line wallet's `pay IMAGE`.
"""

from __future__ import annotations

import io
from typing import Final

from semops.core.errors import E, SemopsError

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE: Final = b"\xff\xd8\xff"
# The only formats a QR picture is read from, by their first bytes and Pillow's names.
IMAGE_FORMATS: Final = {PNG_SIGNATURE: "PNG", JPEG_SIGNATURE: "JPEG"}


def image_format(data: bytes) -> str | None:
    """'PNG' or 'JPEG' from the bytes' own signature, or None for anything else."""
    for signature, name in IMAGE_FORMATS.items():
        if data.startswith(signature):
            return name
    return None


def read_qr_text(data: bytes, *, max_bytes: int, max_pixels: int) -> str:
    """The text of the one QR code in a PNG or JPEG image."""
    import zxingcpp
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise SemopsError(E.TOKEN_INVALID, "no image was sent")
    if len(data) > max_bytes:
        raise SemopsError(E.TOO_LARGE, "the image is too large to be a QR code")
    kind = image_format(data)
    if kind is None:
        raise SemopsError(E.TOKEN_INVALID, "only PNG and JPEG images are read")
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise SemopsError(E.TOO_LARGE, "the image has too many pixels")
            image.load()
            results = zxingcpp.read_barcodes(
                image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
            )
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        raise SemopsError(E.TOKEN_INVALID, "the file is not a readable image") from None
    texts = {result.text for result in results if result.valid}
    if not texts:
        raise SemopsError(E.TOKEN_INVALID, "no QR code was found in the image")
    if len(texts) > 1:
        raise SemopsError(E.TOKEN_INVALID, "the image holds more than one QR code")
    return texts.pop()


__all__ = ["image_format", "read_qr_text"]
