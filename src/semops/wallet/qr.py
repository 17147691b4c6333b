"""Reading a payment request from a picture of its QR code (zxing-cpp over Pillow).

A phone camera would hand the wallet the decoded text; the command line takes an image
file instead. The image is bounded in size before it is decoded, and exactly one QR code
must be in it: two codes in one picture could be a genuine request and a planted one.
"""

from __future__ import annotations

from pathlib import Path

from semops.core.errors import E, SemopsError
from semops.core.limits import QR_IMAGE_MAX_BYTES


def decode_qr_image(path: Path) -> str:
    """The text of the one QR code in an image file."""
    try:
        import zxingcpp
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - both are installed with the project
        raise SemopsError(
            E.UNAVAILABLE, "reading QR images needs the zxing-cpp and pillow packages"
        ) from None
    if path.stat().st_size > QR_IMAGE_MAX_BYTES:
        raise SemopsError(E.TOO_LARGE, "the image is too large to be a QR code")
    try:
        with Image.open(path) as image:
            image.load()
            results = zxingcpp.read_barcodes(
                image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
            )
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        raise SemopsError(E.TOKEN_INVALID, "the file is not a readable image") from None
    texts = [result.text for result in results if result.valid]
    if not texts:
        raise SemopsError(E.TOKEN_INVALID, "no QR code was found in the image")
    if len(set(texts)) > 1:
        raise SemopsError(E.TOKEN_INVALID, "the image holds more than one QR code")
    return texts[0]


__all__ = ["decode_qr_image"]
