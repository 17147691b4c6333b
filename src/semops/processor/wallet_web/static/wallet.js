// The web wallet: what semops.wallet does, in the browser of an enrolled device.
//
// "Signed in" means this browser holds an enrolled device key (store.js); there is no
// password. Every call that reads or changes the account carries a DeviceAuth header
// signed by that key, bound to the method, path and body digest, living a minute and used
// once (its id is single use at the processor, so a captured header cannot be sent again).
// Orders and enrolments are signed messages with the PIN sealed to the processor, bound
// to their digest. Answers become one of: a checked receipt, a readable refusal, or
// "pending" with a way to ask again; never a silent failure.

import * as jose from "./jose.js";
import * as store from "./store.js";

const DEVICE_AUTH_TTL_S = 60;
const ORDER_TTL_S = 300;
const ORDER_POLL_INTERVAL_MS = 1000;
const ORDER_POLL_MAX_MS = 45000;
// The processor refuses bodies above 16 KiB: a larger picture is shrunk and binarised first.
const UPLOAD_MAX_BYTES = 16 * 1024;
const SHRINK_MAX_SIDES = [1024, 800, 640, 512, 400];
const PAY_LINK_PREFIXES = ["semops:pay?", "semops://pay?"];
const JWS_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const REQUEST_TOKEN_MAX_BYTES = 600;

const body = document.body;
const SCALES = JSON.parse(body.dataset.scales || "{}");
const PROCESSOR_NAME = body.dataset.processorName || "your bank";

// --- errors people can read ------------------------------------------------------------

export class WalletError extends Error {
  constructor(code, detail, extra = {}) {
    super(detail || code);
    this.code = code;
    this.extra = extra;
  }
}

const MESSAGES = {
  pin_locked: () =>
    "Your PIN is locked after too many wrong attempts, so no payment can be made. " +
    `Contact ${PROCESSOR_NAME} to unlock it.`,
  request_expired: () => "This payment request has expired. Ask the payee for a new one.",
  message_expired: () => "This payment took too long and has expired. Start again.",
  insufficient_funds: () =>
    "There is not enough money in your account for this payment. " +
    "Top up your account, or pay a smaller amount.",
  request_already_paid: () =>
    "This payment request has already been paid. There is nothing more to pay; " +
    "check your history.",
  request_not_payable: () => "This payment request cannot be paid now. Ask the payee for a new one.",
  transfer_rejected: () =>
    "The payee's side refused this payment. No money has left your account. " +
    "Ask the payee for a new request.",
  transfer_expired: () =>
    "The payment could not be completed in time. No money has left your account. Try again.",
  limit_exceeded: () => "This payment is above your payment limit. Pay a smaller amount.",
  network: () =>
    `We could not reach ${PROCESSOR_NAME}. Check your internet connection and try again.`,
  unavailable: () =>
    `${PROCESSOR_NAME} or the payment network is not answering right now. ` +
    "Try again in a moment.",
  timeout: () =>
    "The payment network did not answer in time. Try again in a moment.",
  device_revoked: () =>
    "This device has been revoked and can no longer be used. " +
    "Set it up again with a new activation code.",
  device_unknown: () => "This device is not set up for a wallet. Set it up with an activation code.",
  activation_invalid: () =>
    "The activation code is wrong, expired or already used. " +
    `Check it, or ask ${PROCESSOR_NAME} for a new one.`,
  pin_format: () => "A PIN is 4 to 6 digits.",
  token_invalid: () =>
    "This is not a SEMOPS payment link or QR code. Check what you pasted or uploaded.",
  too_large: () => "The picture is too large. Crop it to the QR code and try again.",
  signature_invalid: () =>
    "This payment request is not genuine: its signature does not check out. Do not pay it.",
  key_unknown: () =>
    "This payment request is signed by a key the network does not know. Do not pay it.",
  key_revoked: () => "This payment request is signed by a revoked key. Do not pay it.",
  signer_mismatch: () => "This payment request is not signed by its payee's bank. Do not pay it.",
  processor_unknown: () => "The payee's bank is not part of the SEMOPS network.",
  processor_suspended: () =>
    "The payee's bank is suspended from the network right now. Try again later.",
  unauthenticated: () =>
    "Your device's authorisation was refused. Check that this device's clock is right, " +
    "then try again.",
  order_mismatch: () => "The answer did not match this payment. Check your history before paying again.",
  receipt_unchecked: () =>
    "The payment's receipt could not be checked, so it is shown as pending. " +
    "Check your history in a moment.",
  pending: () =>
    "No final answer yet: the payment may still go through. " +
    "Check again in a moment; it will never be paid twice.",
};

export function messageFor(error) {
  const code = error && error.code;
  if (code === "pin_invalid") {
    const left = error.extra && error.extra.attempts_remaining;
    if (Number.isInteger(left)) {
      const attempts = left === 1 ? "1 attempt" : `${left} attempts`;
      return `The PIN is wrong. You have ${attempts} left before your PIN is locked.`;
    }
    return "The PIN is wrong. Check it and try again.";
  }
  if (MESSAGES[code]) return MESSAGES[code]();
  return "Something went wrong. Try again, or contact " + PROCESSOR_NAME + ".";
}

// --- the page's live regions ------------------------------------------------------------

function $(id) {
  return document.getElementById(id);
}

function say(text) {
  $("status").textContent = text;
}

function alertText(text) {
  const box = $("alert");
  box.textContent = text;
  box.hidden = !text;
}

function fail(error) {
  console.debug("wallet error", error && error.code);
  alertText(messageFor(error instanceof WalletError ? error : new WalletError("internal")));
}

function show(id, visible = true) {
  $(id).hidden = !visible;
}

function focusHeading(section) {
  const heading = $(section).querySelector("h2");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

// --- money -------------------------------------------------------------------------------

export function formatAmount(amountMinor, currency) {
  const scale = SCALES[currency];
  if (!Number.isSafeInteger(amountMinor) || scale === undefined) return `${amountMinor} ${currency}`;
  const sign = amountMinor < 0 ? "-" : "";
  const digits = String(Math.abs(amountMinor)).padStart(scale + 1, "0");
  const units = digits.slice(0, digits.length - scale);
  const fraction = digits.slice(digits.length - scale);
  return `${sign}${units}${scale ? "." + fraction : ""} ${currency}`;
}

// "12.50" in EUR -> 1250, by string arithmetic only (no float ever touches money).
export function parseAmount(text, currency) {
  const scale = SCALES[currency];
  const match = /^([0-9]{1,13})(?:[.,]([0-9]+))?$/.exec(String(text).trim());
  if (scale === undefined || !match) throw new WalletError("amount_invalid");
  const fraction = match[2] || "";
  if (fraction.length > scale) throw new WalletError("amount_invalid");
  const minor = Number(match[1] + fraction.padEnd(scale, "0"));
  if (!Number.isSafeInteger(minor) || minor < 1) throw new WalletError("amount_invalid");
  return minor;
}

MESSAGES.amount_invalid = () =>
  "Write the amount as digits, with at most two decimals, for example 12.50.";

function formatTime(seconds) {
  return new Date(seconds * 1000).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" });
}

// --- talking to the processor ------------------------------------------------------------

function nowS() {
  return Math.floor(Date.now() / 1000);
}

async function deviceAuth(device, method, path, bytes) {
  const now = nowS();
  const claims = {
    v: 1,
    type: "DeviceAuth",
    // Single use: the processor refuses a second call with the same id.
    auth_id: jose.randomId("da"),
    account_id: device.account_id,
    method,
    path,
    created_at: now,
    expires_at: now + DEVICE_AUTH_TTL_S,
  };
  if (bytes && bytes.length) claims.body_digest = await jose.sha256B64url(bytes);
  return "SEMOPS-Device " + (await jose.signJws(claims, device.privateKey, device.kid));
}

async function problemOf(response) {
  try {
    const problem = await response.json();
    if (problem && typeof problem.code === "string") {
      return new WalletError(problem.code, problem.title, problem);
    }
  } catch (error) {
    // not a problem document: below
  }
  return new WalletError(response.status >= 500 ? "unavailable" : "internal");
}

// One call: JSON in (signed with the device key when `device` is given), JSON or JOSE out.
export async function call(method, path, { device = null, json, bytes, contentType } = {}) {
  const headers = { Accept: "application/json, application/jose, application/problem+json" };
  let payload = null;
  if (json !== undefined) {
    payload = jose.utf8(JSON.stringify(json));
    headers["Content-Type"] = "application/json";
  } else if (bytes !== undefined) {
    payload = bytes;
    headers["Content-Type"] = contentType || "application/octet-stream";
  }
  if (device) headers.Authorization = await deviceAuth(device, method, path, payload);
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, cache: "no-store", credentials: "omit" });
  } catch (error) {
    throw new WalletError("network");
  }
  return response;
}

async function callJson(method, path, options) {
  const response = await call(method, path, options);
  if (!response.ok) throw await problemOf(response);
  return response.json();
}

let configCache = null;

async function config() {
  if (!configCache) configCache = await callJson("GET", "/v1/wallet/config");
  return configCache;
}

async function requireDevice() {
  const device = await store.loadDevice();
  if (!device || !device.account_id) {
    window.location.assign("/wallet/enrol");
    throw new WalletError("device_unknown");
  }
  show("nav");
  return device;
}

// A device the processor no longer accepts is forgotten here, so the page offers set-up.
async function forgetIfRevoked(error) {
  if (error instanceof WalletError && (error.code === "device_revoked" || error.code === "device_unknown")) {
    await store.forgetDevice();
  }
}

// --- enrolment ---------------------------------------------------------------------------

async function enrol(code, deviceName, pin) {
  const settings = await config();
  let pending = await store.loadDevice();
  if (pending && pending.account_id) throw new WalletError("already_enrolled");
  if (!pending) {
    // Stored before it is registered: a lost answer must not lose the key.
    const key = await jose.generateDeviceKey();
    pending = { privateKey: key.privateKey, jwk: key.jwk, kid: await jose.makeKid("device", key.jwk) };
    await store.saveDevice(pending);
  }
  const now = nowS();
  const draft = {
    v: 1,
    type: "Enrolment",
    activation_code: code,
    device_jwk: pending.jwk,
    device_name: deviceName,
    created_at: now,
    expires_at: now + ORDER_TTL_S,
  };
  const token = await jose.signWithPin(draft, pin, settings.encryption_key, pending.privateKey, pending.kid);
  const response = await call("POST", "/v1/wallet/enrol", { bytes: jose.utf8(token), contentType: "application/jose" });
  if (!response.ok) throw await problemOf(response);
  const result = await response.json();
  if (result.device_kid !== pending.kid) throw new WalletError("device_unknown");
  const device = {
    ...pending,
    account_id: result.account_id,
    customer_name: result.customer_name,
    currency: result.currency,
    device_name: deviceName,
    processor_id: settings.processor_id,
    enrolled_at: now,
  };
  await store.saveDevice(device);
  return device;
}

MESSAGES.already_enrolled = () => "This browser is already set up as a wallet.";
MESSAGES.pin_mismatch = () => "The two PINs are not the same. Type the same PIN twice.";

async function enrolPage() {
  const existing = await store.loadDevice();
  if (existing && existing.account_id) {
    show("enrol-form", false);
    show("enrol-done");
    say("This browser is already set up as your wallet.");
    return;
  }
  $("enrol-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    alertText("");
    const code = $("activation-code").value.trim().toUpperCase();
    const name = $("device-name").value.trim();
    const pin = $("pin").value;
    if (!/^[0-9]{4,6}$/.test(pin)) return fail(new WalletError("pin_format"));
    if (pin !== $("pin-confirm").value) return fail(new WalletError("pin_mismatch"));
    const button = $("enrol-button");
    button.disabled = true;
    say("Setting up this device…");
    try {
      const device = await enrol(code, name, pin);
      $("enrolled-name").textContent = device.customer_name;
      show("enrol-form", false);
      show("enrol-done");
      say(`Done. This browser is now your ${PROCESSOR_NAME} wallet.`);
      focusHeading("enrol-done");
    } catch (error) {
      say("");
      fail(error);
    } finally {
      button.disabled = false;
      $("pin").value = "";
      $("pin-confirm").value = "";
    }
  });
}

// --- home --------------------------------------------------------------------------------

async function homePage() {
  const device = await store.loadDevice();
  if (!device || !device.account_id) {
    show("signed-out");
    say("This browser is not set up as a wallet yet.");
    return;
  }
  show("nav");
  show("account");
  $("customer-name").textContent = device.customer_name;
  $("device-name-shown").textContent = device.device_name;
  try {
    const balance = await callJson("GET", "/v1/wallet/balance", { device });
    $("balance").textContent = formatAmount(balance.available_minor, balance.currency);
    say("Balance up to date.");
    showNotices((await callJson("GET", "/v1/wallet/notices", { device })).notices);
  } catch (error) {
    await forgetIfRevoked(error);
    say("");
    fail(error);
  }
}

// What changed on the account's credentials recently: a code issued or a device added that
// the customer did not ask for is how a leaked code or a tricked bank shows up.
const NOTICE_RECENT_S = 14 * 24 * 60 * 60;
const NOTICE_TEXTS = {
  activation_code_issued: (who) => `${who} issued a code to add a device to your account.`,
  device_enrolled: (who, name) => `A new device was added to your account: ${name}.`,
  device_revoked: (who, name) => `${who} revoked the device ${name}.`,
  credential_reset: (who) => `${who} reset your PIN and revoked your devices.`,
  credential_unlocked: (who) => `${who} unlocked your PIN.`,
};

function noticeText(notice) {
  const who = notice.actor === "operator" ? PROCESSOR_NAME : "You";
  const text = NOTICE_TEXTS[notice.kind];
  return text ? text(who, notice.device_name || "a device") : notice.kind;
}

function showNotices(notices) {
  const recent = (notices || []).filter((notice) => notice.created_at >= nowS() - NOTICE_RECENT_S);
  const list = $("notice-list");
  list.replaceChildren();
  for (const notice of recent) {
    const item = document.createElement("li");
    item.textContent = `${formatTime(notice.created_at)}: ${noticeText(notice)}`;
    list.append(item);
  }
  show("notices", recent.length > 0);
}

// --- paying ------------------------------------------------------------------------------

export function parsePaymentInput(text) {
  let candidate = String(text || "").trim();
  if (candidate.length > REQUEST_TOKEN_MAX_BYTES + 64) throw new WalletError("token_invalid");
  const prefix = PAY_LINK_PREFIXES.find((each) => candidate.startsWith(each));
  if (prefix) {
    const values = candidate.slice(prefix.length).split("&").filter((part) => part.startsWith("r="));
    if (values.length !== 1) throw new WalletError("token_invalid");
    candidate = values[0].slice(2);
  } else if (candidate.startsWith("semops:")) {
    throw new WalletError("token_invalid");
  }
  if (candidate.length > REQUEST_TOKEN_MAX_BYTES || !JWS_RE.test(candidate)) {
    throw new WalletError("token_invalid");
  }
  return candidate;
}

const REQUEST_CLAIMS = {
  rid: "request_id",
  pp: "payee_processor",
  pid: "payee_id",
  pn: "payee_name",
  amt: "amount_minor",
  cur: "currency",
  ref: "reference",
  iat: "created_at",
  exp: "expires_at",
  cnd: "condition",
  bd: "basket_digest",
};

// The request as the processor checked it, re-checked here: the JWS signature with the key
// the processor found in the directory, and the claims the page shows read from the token.
async function verifiedRequest(device, token) {
  const checked = await callJson("POST", "/v1/wallet/verify", { device, json: { token } });
  let claims;
  try {
    claims = await jose.verifyJws(token, checked.signer.jwk, checked.signer.kid);
  } catch (error) {
    throw new WalletError("signature_invalid");
  }
  if (claims.t !== "PaymentRequest" || claims.v !== 1) throw new WalletError("token_invalid");
  const request = {};
  for (const [short, name] of Object.entries(REQUEST_CLAIMS)) {
    if (claims[short] !== undefined) request[name] = claims[short];
    if (request[name] !== checked.request[name]) throw new WalletError("signature_invalid");
  }
  if (request.expires_at <= nowS()) throw new WalletError("request_expired");
  return { token, request, processorName: checked.payee_processor_name };
}

async function existingOrder(requestId) {
  const orders = await store.ordersForRequest(requestId);
  return orders.find((order) => order.state === "completed" || order.state === "pending") || null;
}

async function buildOrder(device, verified, pin) {
  const settings = await config();
  const now = nowS();
  const draft = {
    v: 1,
    type: "PaymentOrder",
    order_id: jose.randomId("or"),
    payer_processor: settings.processor_id,
    payer_account: device.account_id,
    request: verified.token,
    amount_minor: verified.request.amount_minor,
    currency: verified.request.currency,
    created_at: now,
    expires_at: now + ORDER_TTL_S,
  };
  const token = await jose.signWithPin(draft, pin, settings.encryption_key, device.privateKey, device.kid);
  return {
    order_id: draft.order_id,
    request_id: verified.request.request_id,
    token,
    request: verified.request,
    request_token: verified.token,
    state: "created",
    created_at: now,
    expires_at: draft.expires_at,
  };
}

// A receipt proves this payment only if our processor signed it for exactly this order
// and request, and its fulfilment hashes to the condition of the request we approved.
async function checkReceipt(token, order) {
  const settings = await config();
  const claims = await jose.verifyJws(token, settings.signing_key.jwk, settings.signing_key.kid);
  const request = order.request;
  const expected = {
    type: "Receipt",
    order_id: order.order_id,
    request_id: request.request_id,
    payer_processor: settings.processor_id,
    payee_processor: request.payee_processor,
    payee_id: request.payee_id,
    amount_minor: request.amount_minor,
    currency: request.currency,
    condition: request.condition,
  };
  for (const [name, value] of Object.entries(expected)) {
    if (claims[name] !== value) throw new WalletError("order_mismatch");
  }
  if (!(await jose.fulfils(claims.fulfilment, request.condition))) throw new WalletError("order_mismatch");
  return claims;
}

// What the processor's answer means for a stored order: completed, failed, or pending.
async function settle(order, response) {
  const type = (response.headers.get("Content-Type") || "").split(";")[0];
  if (response.status === 200 && type === "application/jose") {
    const token = (await response.text()).trim();
    try {
      const receipt = await checkReceipt(token, order);
      await store.saveOrder({ ...order, state: "completed", receipt: token });
      return { state: "completed", receipt };
    } catch (error) {
      await store.saveOrder({ ...order, state: "pending" });
      return { state: "pending", error: new WalletError("receipt_unchecked") };
    }
  }
  if (response.status >= 400 && response.status < 500 && ![408, 429].includes(response.status)) {
    const error = await problemOf(response);
    if (error.code !== "internal") {
      await store.saveOrder({ ...order, state: "failed", error_code: error.code });
      return { state: "failed", error };
    }
  }
  await store.saveOrder({ ...order, state: "pending" });
  return { state: "pending", error: new WalletError("pending") };
}

async function send(order) {
  await store.saveOrder({ ...order, state: "sent" });
  let response;
  try {
    response = await call("POST", "/v1/wallet/orders", { bytes: jose.utf8(order.token), contentType: "application/jose" });
  } catch (error) {
    await store.saveOrder({ ...order, state: "pending" });
    return { state: "pending", error };
  }
  return settle(order, response);
}

// Ask about a pending order until it is decided (or we stop waiting).
async function follow(device, order) {
  const started = Date.now();
  while (Date.now() - started < ORDER_POLL_MAX_MS) {
    const path = `/v1/wallet/orders/${order.order_id}`;
    let response;
    try {
      response = await call("GET", path, { device });
    } catch (error) {
      return { state: "pending", error };
    }
    if (response.status === 404 && nowS() < order.expires_at) return send(order);
    if (response.ok) {
      const status = await response.json();
      if (typeof status.receipt === "string") {
        const receipt = new Response(status.receipt, { status: 200, headers: { "Content-Type": "application/jose" } });
        return settle(order, receipt);
      }
      if (status.error && typeof status.error.code === "string") {
        await store.saveOrder({ ...order, state: "failed", error_code: status.error.code });
        return { state: "failed", error: new WalletError(status.error.code, status.error.title, status.error) };
      }
    }
    await new Promise((resolve) => setTimeout(resolve, ORDER_POLL_INTERVAL_MS));
  }
  return { state: "pending", error: new WalletError("pending") };
}

async function pay(device, verified, pin) {
  const order = await buildOrder(device, verified, pin);
  await store.saveOrder(order); // stored before it is sent: a retry re-sends these bytes
  const outcome = await send(order);
  if (outcome.state === "pending" && !(outcome.error && outcome.error.code === "network")) {
    return { order, ...(await follow(device, order)) };
  }
  return { order, ...outcome };
}

// A picture larger than the processor takes (a phone photo) is scaled down, turned into
// black and white around its mean brightness, and sent as a 1-bit greyscale PNG: a QR code
// survives that, and the file shrinks by two orders of magnitude.
async function imageBytes(file) {
  const raw = new Uint8Array(await file.arrayBuffer());
  if (raw.length <= UPLOAD_MAX_BYTES) return raw;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (error) {
    throw new WalletError("token_invalid");
  }
  for (const side of SHRINK_MAX_SIDES) {
    const scale = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
    const width = Math.max(1, Math.round(bitmap.width * scale));
    const height = Math.max(1, Math.round(bitmap.height * scale));
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    context.drawImage(bitmap, 0, 0, width, height);
    const pixels = context.getImageData(0, 0, width, height).data;
    const luminance = new Float32Array(width * height);
    let total = 0;
    for (let i = 0; i < luminance.length; i += 1) {
      const value = pixels[4 * i] * 0.299 + pixels[4 * i + 1] * 0.587 + pixels[4 * i + 2] * 0.114;
      luminance[i] = value;
      total += value;
    }
    const png = await bilevelPng(luminance, width, height, total / luminance.length);
    if (png.length <= UPLOAD_MAX_BYTES) return png;
  }
  throw new WalletError("too_large");
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(jose.utf8(type), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

// PNG, greyscale, bit depth 1 (RFC 2083): each row a filter byte 0 and packed pixels.
async function bilevelPng(luminance, width, height, threshold) {
  const rowBytes = Math.ceil(width / 8);
  const raw = new Uint8Array(height * (rowBytes + 1));
  for (let y = 0; y < height; y += 1) {
    const row = y * (rowBytes + 1);
    for (let x = 0; x < width; x += 1) {
      if (luminance[y * width + x] >= threshold) raw[row + 1 + (x >> 3)] |= 0x80 >> (x & 7);
    }
  }
  const zlib = new Uint8Array(
    await new Response(new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer(),
  );
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([1, 0, 0, 0, 0], 8); // bit depth 1, greyscale, deflate, filter 0, no interlace
  return jose.concat([
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", header),
    pngChunk("IDAT", zlib),
    pngChunk("IEND", new Uint8Array(0)),
  ]);
}

function showStep(step) {
  for (const id of ["step-input", "step-review", "step-pin", "step-result"]) show(id, id === step);
  focusHeading(step);
}

function showReview(verified) {
  const request = verified.request;
  // The name next to the id and the bank that vouches for both: a look-alike name cannot
  // pass for another payee's (DESIGN.md §6).
  const payee = `${request.payee_name} (${request.payee_id}, ${verified.processorName})`;
  $("review-payee").textContent = request.payee_name;
  $("review-payee-id").textContent = request.payee_id;
  $("review-amount").textContent = formatAmount(request.amount_minor, request.currency);
  $("review-reference").textContent = request.reference || "—";
  $("review-processor").textContent = verified.processorName;
  $("review-expires").textContent = formatTime(request.expires_at);
  $("pin-amount").textContent = formatAmount(request.amount_minor, request.currency);
  $("pin-payee").textContent = payee;
  showStep("step-review");
  say(`Check the payee and the amount: ${payee}, ${formatAmount(request.amount_minor, request.currency)}.`);
}

function showReceipt(receipt) {
  $("receipt-payee").textContent = receipt.payee_name;
  $("receipt-amount").textContent = formatAmount(receipt.amount_minor, receipt.currency);
  $("receipt-reference").textContent = receipt.reference || "—";
  $("receipt-time").textContent = formatTime(receipt.committed_at);
  $("receipt-order").textContent = receipt.order_id;
  $("receipt-transfer").textContent = receipt.transfer_id;
  show("receipt");
  show("result-failed", false);
  show("result-pending", false);
  showStep("step-result");
  say(`Paid ${formatAmount(receipt.amount_minor, receipt.currency)} to ${receipt.payee_name}.`);
}

async function payPage() {
  const device = await requireDevice();
  let verified = null;
  let current = null; // the order of the last attempt, if it is pending

  async function review(text) {
    alertText("");
    say("Checking the payment request…");
    try {
      const token = parsePaymentInput(text);
      verified = await verifiedRequest(device, token);
      if (await existingOrder(verified.request.request_id)) throw new WalletError("request_already_paid");
      showReview(verified);
    } catch (error) {
      await forgetIfRevoked(error);
      say("");
      fail(error);
    }
  }

  $("input-form").addEventListener("submit", (event) => {
    event.preventDefault();
    review($("pay-input").value);
  });
  $("qr-file").addEventListener("change", async () => {
    const file = $("qr-file").files[0];
    if (!file) return;
    alertText("");
    say("Reading the QR code…");
    try {
      const bytes = await imageBytes(file);
      const read = await callJson("POST", "/v1/wallet/qr", { device, bytes, contentType: file.type || "application/octet-stream" });
      $("pay-input").value = read.text;
      await review(read.text);
    } catch (error) {
      say("");
      fail(error);
    } finally {
      $("qr-file").value = "";
    }
  });
  $("to-pin").addEventListener("click", () => {
    alertText("");
    showStep("step-pin");
    $("pin-input").value = "";
    $("pin-input").focus();
    say("Enter your PIN to approve the payment.");
  });
  for (const cancel of document.querySelectorAll("[data-action=cancel]")) {
    cancel.addEventListener("click", () => {
      verified = null;
      alertText("");
      $("pay-input").value = "";
      showStep("step-input");
      say("Payment cancelled. Nothing was paid.");
    });
  }
  for (const key of document.querySelectorAll("[data-digit]")) {
    key.addEventListener("click", () => {
      const input = $("pin-input");
      if (input.value.length < 6) input.value += key.dataset.digit;
    });
  }
  $("pin-delete").addEventListener("click", () => {
    const input = $("pin-input");
    input.value = input.value.slice(0, -1);
  });
  $("pin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const pin = $("pin-input").value;
    $("pin-input").value = "";
    alertText("");
    if (!/^[0-9]{4,6}$/.test(pin)) return fail(new WalletError("pin_format"));
    $("pay-button").disabled = true;
    say("Paying…");
    try {
      const outcome = await pay(device, verified, pin);
      current = outcome.order;
      if (outcome.state === "completed") return showReceipt(outcome.receipt);
      if (outcome.state === "failed" && outcome.error.code === "pin_invalid") {
        say("");
        fail(outcome.error);
        $("pin-input").focus();
        return;
      }
      show("receipt", false);
      show("result-failed", outcome.state === "failed");
      show("result-pending", outcome.state === "pending");
      showStep("step-result");
      say(outcome.state === "failed" ? "The payment was not made." : "The payment is pending.");
      fail(outcome.error);
    } catch (error) {
      await forgetIfRevoked(error);
      say("");
      fail(error);
    } finally {
      $("pay-button").disabled = false;
    }
  });
  $("try-again").addEventListener("click", () => {
    alertText("");
    showStep("step-pin");
    $("pin-input").value = "";
    $("pin-input").focus();
    say("Enter your PIN to approve the payment.");
  });
  $("check-again").addEventListener("click", async () => {
    if (!current) return;
    alertText("");
    say("Asking about the payment…");
    const order = (await store.loadOrder(current.order_id)) || current;
    const outcome = nowS() < order.expires_at ? await send(order) : await follow(device, order);
    if (outcome.state === "completed") return showReceipt(outcome.receipt);
    show("result-failed", outcome.state === "failed");
    show("result-pending", outcome.state === "pending");
    say(outcome.state === "failed" ? "The payment was not made." : "The payment is still pending.");
    fail(outcome.error);
  });

  const hash = decodeURIComponent(window.location.hash.slice(1));
  if (hash) {
    $("pay-input").value = hash.startsWith("r=") ? hash.slice(2) : hash;
    await review($("pay-input").value);
  } else {
    say("Paste a payment link or upload a picture of its QR code.");
  }
}

// --- history -----------------------------------------------------------------------------

const HISTORY_LABELS = {
  payment: (entry) => `Payment to ${entry.payee_name || "a payee"}`,
  payment_returned: (entry) => `Payment to ${entry.payee_name || "a payee"} returned`,
  refund: (entry) => `Refund from ${entry.payee_name || "a payee"}`,
  refund_sent: (entry) => `Refund sent by ${entry.payee_name || "you"}`,
  payment_received: () => "Payment received",
  deposit: () => "Deposit",
};
const STATE_LABELS = { completed: "Completed", pending: "Pending", failed: "Failed" };

async function historyPage() {
  const device = await requireDevice();
  say("Loading your history…");
  try {
    const [balance, history] = await Promise.all([
      callJson("GET", "/v1/wallet/balance", { device }),
      callJson("GET", "/v1/wallet/history", { device }),
    ]);
    $("history-balance").textContent = formatAmount(balance.available_minor, balance.currency);
    const list = $("history-list");
    list.replaceChildren();
    for (const entry of history.entries) {
      const item = document.createElement("li");
      item.className = "entry";
      item.dataset.kind = entry.kind;
      const label = (HISTORY_LABELS[entry.kind] || (() => entry.kind))(entry);
      const title = document.createElement("span");
      title.className = "entry-label";
      title.textContent = label;
      const amount = document.createElement("span");
      amount.className = "entry-amount";
      amount.textContent = formatAmount(entry.amount_minor, entry.currency);
      const meta = document.createElement("span");
      meta.className = "entry-meta";
      meta.textContent = formatTime(entry.created_at) + (entry.state ? ` · ${STATE_LABELS[entry.state] || entry.state}` : "");
      item.append(title, amount, meta);
      list.append(item);
    }
    show("history-empty", history.entries.length === 0);
    say(`${history.entries.length} movements.`);
  } catch (error) {
    await forgetIfRevoked(error);
    say("");
    fail(error);
  }
}

// --- devices -----------------------------------------------------------------------------

async function devicesPage() {
  const device = await requireDevice();

  async function revoke(kid, name) {
    alertText("");
    say(`Revoking ${name}…`);
    try {
      await callJson("POST", "/v1/wallet/devices/revoke", { device, json: { kid } });
      if (kid === device.kid) {
        await store.forgetDevice();
        show("device-list", false);
        show("self-revoked");
        show("nav", false);
        say("This device is revoked and no longer holds a wallet.");
        focusHeading("self-revoked");
        return;
      }
      await render();
      say(`${name} is revoked: it can no longer pay or read your account.`);
    } catch (error) {
      await forgetIfRevoked(error);
      say("");
      fail(error);
    }
  }

  function confirmRow(item, entry) {
    const box = document.createElement("div");
    box.className = "confirm";
    const question = document.createElement("p");
    question.textContent = `Revoke ${entry.device_name}? It can never pay again.`;
    const yes = document.createElement("button");
    yes.type = "button";
    yes.className = "danger";
    yes.textContent = "Yes, revoke";
    yes.addEventListener("click", () => revoke(entry.kid, entry.device_name));
    const no = document.createElement("button");
    no.type = "button";
    no.textContent = "Keep it";
    no.addEventListener("click", () => { box.remove(); item.querySelector(".revoke").hidden = false; item.querySelector(".revoke").focus(); });
    box.append(question, yes, no);
    item.append(box);
    yes.focus();
  }

  async function render() {
    const answer = await callJson("GET", "/v1/wallet/devices", { device });
    const list = $("device-list");
    list.replaceChildren();
    for (const entry of answer.devices) {
      const item = document.createElement("li");
      item.className = "device";
      item.dataset.kid = entry.kid;
      item.dataset.status = entry.status;
      const name = document.createElement("span");
      name.className = "device-name";
      name.textContent = entry.device_name + (entry.kid === answer.this_device ? " (this device)" : "");
      const meta = document.createElement("span");
      meta.className = "device-meta";
      meta.textContent = entry.status === "active"
        ? `Active since ${formatTime(entry.created_at)}`
        : `Revoked ${formatTime(entry.revoked_at)}`;
      item.append(name, meta);
      if (entry.status === "active") {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "revoke";
        button.textContent = "Revoke";
        button.setAttribute("aria-label", `Revoke ${entry.device_name}`);
        button.addEventListener("click", () => { button.hidden = true; confirmRow(item, entry); });
        item.append(button);
      }
      list.append(item);
    }
  }

  $("add-device-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const pin = $("add-device-pin").value;
    $("add-device-pin").value = "";
    alertText("");
    if (!/^[0-9]{4,6}$/.test(pin)) return fail(new WalletError("pin_format"));
    try {
      const settings = await config();
      const now = nowS();
      const draft = { purpose: "new_device", account_id: device.account_id, created_at: now, expires_at: now + DEVICE_AUTH_TTL_S };
      const pinBlock = await jose.makePinBlock(pin, await jose.boundDigest(draft), settings.encryption_key);
      const issued = await callJson("POST", "/v1/wallet/devices/activation-codes", { device, json: { ...draft, pin_block: pinBlock } });
      $("new-code-value").textContent = issued.activation_code;
      $("new-code-expires").textContent = formatTime(issued.expires_at);
      show("new-code");
      say("Your activation code is ready.");
    } catch (error) {
      await forgetIfRevoked(error);
      say("");
      fail(error);
    }
  });

  say("Loading your devices…");
  try {
    await render();
    say("Your devices are listed below.");
  } catch (error) {
    await forgetIfRevoked(error);
    say("");
    fail(error);
  }
}

// --- being paid (P2P) --------------------------------------------------------------------

async function requestPage() {
  const device = await requireDevice();
  $("request-currency").textContent = device.currency;
  $("request-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    alertText("");
    try {
      const amountMinor = parseAmount($("request-amount").value, device.currency);
      const reference = $("request-reference").value.trim();
      // A key made here: the same request comes back if this one is sent again.
      const document_ = {
        amount_minor: amountMinor,
        currency: device.currency,
        idempotency_key: jose.randomId("ms"),
      };
      if (reference) document_.reference = reference;
      say("Creating the payment request…");
      const created = await callJson("POST", "/v1/wallet/requests", { device, json: document_ });
      // Our processor must have signed exactly what was asked for before it is handed out.
      const settings = await config();
      const claims = await jose.verifyJws(created.token, settings.signing_key.jwk, settings.signing_key.kid);
      if (claims.pp !== settings.processor_id || claims.amt !== amountMinor || claims.cur !== device.currency || (claims.ref || "") !== reference) {
        throw new WalletError("order_mismatch");
      }
      $("request-qr").src = "/wallet/qr.svg?link=" + encodeURIComponent(created.link);
      $("request-link").value = created.link;
      $("request-summary").textContent = `${formatAmount(amountMinor, device.currency)} to ${device.customer_name}` + (reference ? ` · ${reference}` : "");
      $("request-expires").textContent = formatTime(created.expires_at);
      show("request-result");
      focusHeading("request-result");
      say("Your payment request is ready: show the QR code or share the link.");
    } catch (error) {
      await forgetIfRevoked(error);
      say("");
      fail(error);
    }
  });
  $("copy-link").addEventListener("click", async () => {
    $("request-link").select();
    try {
      await navigator.clipboard.writeText($("request-link").value);
      say("Link copied.");
    } catch (error) {
      say("Select the link and copy it.");
    }
  });
}

// --- start -------------------------------------------------------------------------------

const CONTROLLERS = {
  home: homePage,
  enrol: enrolPage,
  pay: payPage,
  history: historyPage,
  devices: devicesPage,
  request: requestPage,
};

async function start() {
  const controller = CONTROLLERS[body.dataset.page];
  try {
    if (controller) await controller();
  } catch (error) {
    if (!(error instanceof WalletError && error.code === "device_unknown")) fail(error);
  } finally {
    body.dataset.ready = "true";
  }
}

start();
