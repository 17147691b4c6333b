/* The checkout page's live status: Server-Sent Events, with polling as the fallback.
   The stream pushes the order's public status; if it cannot be opened (or breaks), the
   page asks GET .../status every few seconds until the stream is back. Text is set with
   textContent only, never as HTML. */
(function () {
  "use strict";
  var config = window.semopsCheckout;
  var line = document.getElementById("status");
  var pay = document.getElementById("pay");
  var guarantee = document.getElementById("guarantee");
  var connection = document.getElementById("connection");
  var source = null;
  var pollTimer = null;
  var finished = false;

  function isFinal(state) { return config.finalStates.indexOf(state) >= 0; }

  function setText(id, text) {
    var element = document.getElementById(id);
    if (element) { element.textContent = text || ""; }
  }

  function reachable() { connection.hidden = true; connection.textContent = ""; }

  function unreachable() {
    connection.textContent = config.unreachableText;
    connection.hidden = false;
  }

  function show(status) {
    if (line.dataset.state !== status.state) {
      line.dataset.state = status.state;
      line.textContent = config.texts[status.state] || status.state;
    }
    pay.hidden = status.state !== "open";
    if (status.guarantee) {
      setText("guarantee-kind", status.guarantee.guarantee);
      setText("guarantee-by", status.guarantee.processor);
      setText("transfer-id", status.transfer_id);
      setText("paid-at", status.paid_at_text);
      guarantee.hidden = false;
    }
    if (isFinal(status.state)) { finish(); }
  }

  function finish() {
    finished = true;
    if (source) { source.close(); source = null; }
    if (pollTimer) { clearTimeout(pollTimer); pollTimer = null; }
  }

  function poll() {
    pollTimer = null;
    if (finished) { return; }
    fetch(config.statusUrl, { headers: { "Accept": "application/json" }, cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (status) { reachable(); show(status); schedulePoll(); })
      .catch(function () { unreachable(); schedulePoll(); });
  }

  function schedulePoll() {
    if (finished || pollTimer || (source && source.readyState === 1)) { return; }
    line.dataset.live = "poll";
    pollTimer = setTimeout(poll, config.pollMs);
  }

  function listen() {
    if (!window.EventSource) { schedulePoll(); return; }
    source = new EventSource(config.eventsUrl);
    source.addEventListener("open", function () {
      line.dataset.live = "sse";
      reachable();
      if (pollTimer) { clearTimeout(pollTimer); pollTimer = null; }
    });
    source.addEventListener("order", function (event) {
      reachable();
      show(JSON.parse(event.data));
    });
    source.addEventListener("error", function () {
      if (finished) { return; }
      if (source && source.readyState === 2) { source = null; }  // closed for good
      schedulePoll();  // meanwhile EventSource (if not closed) tries again by itself
    });
  }

  if (!isFinal(line.dataset.state)) { listen(); }
})();
