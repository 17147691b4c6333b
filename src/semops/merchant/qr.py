"""The QR code of a payment link, as SVG (inline or a file) and PNG, drawn by segno.

The code carries the deep link `semops:pay?r=<token>`: a phone camera opens the wallet
with it, and a wallet given the plain token or the link reads the same request. Error
correction level M (15 %) survives a smudged screen; segno picks the smallest version.
"""

from __future__ import annotations

import io
from typing import Final

import segno

QR_ERROR_LEVEL: Final = "m"
QR_SCALE: Final = 4
QR_BORDER: Final = 4


def make_qr(link: str) -> segno.QRCode:
    return segno.make(link, error=QR_ERROR_LEVEL, micro=False, boost_error=False)


def qr_svg(link: str) -> bytes:
    buffer = io.BytesIO()
    make_qr(link).save(
        buffer, kind="svg", scale=QR_SCALE, border=QR_BORDER, title="Pay with SEMOPS"
    )
    return buffer.getvalue()


def qr_png(link: str) -> bytes:
    buffer = io.BytesIO()
    make_qr(link).save(buffer, kind="png", scale=QR_SCALE, border=QR_BORDER)
    return buffer.getvalue()


def qr_svg_inline(link: str) -> str:
    """An <svg> element for an HTML page (no XML declaration, no external reference).

    With a viewBox instead of a fixed width and height, so the page's stylesheet can size
    it for the screen and the whole code, quiet zone included, scales with it."""
    return str(make_qr(link).svg_inline(scale=QR_SCALE, border=QR_BORDER, omitsize=True))


__all__ = ["make_qr", "qr_png", "qr_svg", "qr_svg_inline"]
