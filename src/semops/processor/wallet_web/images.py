"""Pictures of payment links: reading the QR code in an uploaded image, drawing one as SVG.

Reading is zxing-cpp over Pillow (semops.service.images: PNG and JPEG only, told apart by
their first bytes before Pillow sees them), bounded before any pixel is decoded: the bytes
by the app's body limit and QR_UPLOAD_MAX_BYTES, the pixel count by QR_IMAGE_MAX_PIXELS (a
tiny PNG can declare a huge canvas), and exactly one QR code must be in the picture.
Drawing is segno, error correction level M.
"""

from __future__ import annotations

import io
import re
from typing import Final

import segno

from semops.core.errors import E, SemopsError
from semops.core.limits import MESSAGE_MAX_BYTES, REQUEST_TOKEN_MAX_BYTES
from semops.service.images import read_qr_text

# An upload is a body of the public app, which refuses anything above MESSAGE_MAX_BYTES
# before it is read; a QR code of a 600-byte token is a few KiB as PNG. The page shrinks
# and binarises a larger picture (a phone photo) before it sends it.
QR_UPLOAD_MAX_BYTES: Final = MESSAGE_MAX_BYTES
# 4096 x 4096 pixels: far more than a QR code needs, and bounded memory when decoding.
QR_IMAGE_MAX_PIXELS: Final = 4096 * 4096
# What a QR code of a payment link holds: the link prefix and the token.
PAY_LINK_MAX_CHARS: Final = REQUEST_TOKEN_MAX_BYTES + 16
_PAY_LINK_RE: Final = re.compile(
    r"semops:pay\?r=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", re.ASCII
)
QR_SCALE: Final = 4
QR_BORDER: Final = 4


def decode_qr(data: bytes) -> str:
    """The text of the one QR code in an uploaded image (PNG or JPEG only)."""
    return read_qr_text(data, max_bytes=QR_UPLOAD_MAX_BYTES, max_pixels=QR_IMAGE_MAX_PIXELS)


def check_pay_link(link: str) -> str:
    """A `semops:pay?r=<token>` link, or token_invalid: only such links are drawn."""
    if len(link) > PAY_LINK_MAX_CHARS or not _PAY_LINK_RE.fullmatch(link):
        raise SemopsError(E.TOKEN_INVALID, "only semops:pay?r=<token> links are drawn")
    return link


def pay_link_svg(link: str) -> bytes:
    """An SVG document of the link's QR code (no script, no external reference)."""
    buffer = io.BytesIO()
    segno.make(check_pay_link(link), error="m", micro=False, boost_error=False).save(
        buffer, kind="svg", scale=QR_SCALE, border=QR_BORDER, title="Pay with SEMOPS"
    )
    return buffer.getvalue()


__all__ = ["QR_UPLOAD_MAX_BYTES", "check_pay_link", "decode_qr", "pay_link_svg"]
