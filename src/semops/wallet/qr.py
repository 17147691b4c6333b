"""Reading a payment request from a picture of its QR code (zxing-cpp over Pillow).

A phone camera would hand the wallet the decoded text; the command line takes an image
file instead: PNG or JPEG only, bounded in size and pixels before it is decoded, and
exactly one QR code must be in it (semops.service.images).
"""

from __future__ import annotations

from pathlib import Path

from semops.core.errors import E, SemopsError
from semops.core.limits import QR_FILE_MAX_PIXELS, QR_IMAGE_MAX_BYTES
from semops.service.images import read_qr_text


def decode_qr_image(path: Path) -> str:
    """The text of the one QR code in an image file."""
    if path.stat().st_size > QR_IMAGE_MAX_BYTES:
        raise SemopsError(E.TOO_LARGE, "the image is too large to be a QR code")
    data = path.read_bytes()
    return read_qr_text(data, max_bytes=QR_IMAGE_MAX_BYTES, max_pixels=QR_FILE_MAX_PIXELS)


__all__ = ["decode_qr_image"]
