"""The web wallet a processor serves to its own customers (DESIGN.md §2, §9).

Pages under `/wallet/` are server-rendered shells (Jinja2, autoescaped) that carry no
personal data; the browser fills them in through the wallet API, signing every call with
the device key it holds in WebCrypto (non-extractable, kept in IndexedDB). The browser does
what the Python wallet does: enrolment, orders with PIN blocks sealed to the processor,
device authorisations, receipt checks. The few API endpoints the pages need beyond the
existing wallet API (request verification, QR decoding, the device list and revocation,
a QR drawing of a P2P link) live here too.
"""

from semops.processor.wallet_web.router import wallet_web_router

__all__ = ["wallet_web_router"]
