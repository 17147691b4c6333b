"""The checkout page: the amount, the QR code, the link, and a status line that follows the
order by polling `GET /v1/orders/{id}`.

Server-rendered, self-contained: the QR is an inline SVG, the few lines of script are
inline with a per-response nonce, and nothing is loaded from anywhere else (the Content
Security Policy says so). Every value is HTML-escaped. There is nothing about the payer to
show, because the merchant never learns it.
"""

from __future__ import annotations

import html
import json
from typing import Any, Final

from semops.merchant.qr import qr_svg_inline

STATUS_POLL_INTERVAL_MS: Final = 2000
_STATUS_TEXT: Final = {
    "creating": "Preparing the payment request…",
    "open": "Waiting for payment: scan the code with your SEMOPS wallet.",
    "paid": "Paid. Thank you! The payment is guaranteed by our processor.",
    "partially_refunded": "Paid (partly refunded).",
    "refunded": "Refunded.",
    "expired": "This payment request has expired.",
    "failed": "This payment request could not be created.",
}


def content_security_policy(nonce: str) -> str:
    return (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; "
        "style-src 'unsafe-inline'; "
        "img-src 'self' data:; "
        "connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def status_text(state: str) -> str:
    return _STATUS_TEXT.get(state, state)


def render_checkout(order: dict[str, Any], merchant_name: str, nonce: str) -> str:
    """The checkout page of one order (a view from `order_view`)."""
    escape = html.escape
    link = order.get("link")
    qr = qr_svg_inline(link) if link else ""
    reference = order.get("reference")
    status_url = f"/v1/orders/{order['order_id']}"
    texts = json.dumps(_STATUS_TEXT)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pay {escape(merchant_name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 28rem; margin: 2rem auto;
       padding: 0 1rem; text-align: center; color: #111; }}
.amount {{ font-size: 2.2rem; font-weight: 700; margin: .5rem 0; }}
.qr svg {{ width: 16rem; height: 16rem; }}
.link {{ word-break: break-all; font-size: .75rem; color: #555; }}
#status {{ font-weight: 600; margin: 1rem 0; }}
#status[data-state="paid"] {{ color: #0a7d28; }}
#status[data-state="expired"], #status[data-state="failed"] {{ color: #b00020; }}
</style>
</head>
<body>
<h1>{escape(merchant_name)}</h1>
<div class="amount" id="amount">{escape(order["amount"])} {escape(order["currency"])}</div>
{f'<div class="reference">Reference: {escape(reference)}</div>' if reference else ""}
<div class="qr" id="qr">{qr}</div>
<p><a id="pay-link" href="{escape(link or "#")}">Open in your SEMOPS wallet</a></p>
<p class="link">{escape(link or "")}</p>
<p id="status" data-state="{escape(order["state"])}" role="status" aria-live="polite">{
        escape(status_text(order["state"]))
    }</p>
<script nonce="{escape(nonce)}">
(function () {{
  var texts = {texts};
  var done = ["paid", "partially_refunded", "refunded", "expired", "failed"];
  var line = document.getElementById("status");
  function poll() {{
    fetch("{escape(status_url)}", {{headers: {{"Accept": "application/json"}}}})
      .then(function (r) {{ return r.ok ? r.json() : null; }})
      .then(function (order) {{
        if (order) {{
          line.dataset.state = order.state;
          line.textContent = texts[order.state] || order.state;
          if (done.indexOf(order.state) >= 0) {{ return; }}
        }}
        setTimeout(poll, {STATUS_POLL_INTERVAL_MS});
      }})
      .catch(function () {{ setTimeout(poll, {STATUS_POLL_INTERVAL_MS}); }});
  }}
  if (done.indexOf(line.dataset.state) < 0) {{ setTimeout(poll, {STATUS_POLL_INTERVAL_MS}); }}
}})();
</script>
</body>
</html>
"""


__all__ = ["content_security_policy", "render_checkout", "status_text"]
