// The wallet's cryptographic recipes in the browser, over WebCrypto: the same bytes the
// Python wallet makes (semops.core.encoding, semops.crypto.jose, semops.crypto.keys).
//
// - canonicalJson: RFC 8785 for the values SEMOPS uses (objects, arrays, strings, safe
//   integers, booleans, null); members sorted by UTF-16 code units, which is what
//   Array.prototype.sort compares; floats and lone surrogates are refused.
// - JWS ES256 with the protected header exactly {alg, kid}; WebCrypto's ECDSA signature is
//   already the raw r||s form JWS uses. Low-S both ways, as in semops.crypto.jose: (r, s)
//   and (r, n - s) both verify, so signing replaces a high s by n - s (WebCrypto does not)
//   and verifying refuses a high s.
// - JWE ECDH-ES+A256KW with A256GCM to one recipient: ephemeral P-256 key, Concat KDF
//   (RFC 7518 §4.6.2, SHA-256, written here because WebCrypto has none), AES-KW of a fresh
//   content key, AES-GCM with the protected header as additional data.
// - kid = "<owner>:" + the first 16 characters of the RFC 7638 thumbprint.
//
// Private keys never leave WebCrypto: the device key is made non-extractable, and only the
// ephemeral ECDH key of one JWE (used once, then dropped) is ever exported, its public half.

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const B64URL = /^[A-Za-z0-9_-]*$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const THUMBPRINT_CHARS_IN_KID = 16;
const P256 = { name: "ECDSA", namedCurve: "P-256" };
const ES256 = { name: "ECDSA", hash: "SHA-256" };
// The order of P-256's base point; an ES256 s must be at most half of it.
const P256_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const P256_HALF_ORDER = P256_ORDER / 2n;
const ES256_SIGNATURE_BYTES = 64;

export const SIGNING_ALGORITHM = "ES256";
export const KEY_WRAP_ALGORITHM = "ECDH-ES+A256KW";
export const CONTENT_ALGORITHM = "A256GCM";

export class JoseError extends Error {}

export function utf8(text) {
  return encoder.encode(text);
}

export function b64urlEncode(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function b64urlDecode(text) {
  if (typeof text !== "string" || !B64URL.test(text) || text.length % 4 === 1) {
    throw new JoseError("not unpadded base64url");
  }
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  const binary = atob(padded);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  if (b64urlEncode(bytes) !== text) throw new JoseError("not canonical base64url");
  return bytes;
}

export function canonicalJson(value) {
  if (value === null || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new JoseError("only integers are allowed");
    return String(value);
  }
  if (typeof value === "string") {
    if (LONE_SURROGATE.test(value)) throw new JoseError("strings must be valid Unicode");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).filter((key) => value[key] !== undefined).sort();
    return "{" + keys.map((key) => canonicalJson(key) + ":" + canonicalJson(value[key])).join(",") + "}";
  }
  throw new JoseError("not a JSON value");
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export async function sha256B64url(bytes) {
  return b64urlEncode(await sha256(bytes));
}

// SHA-256 of the canonical JSON of a value: semops.core.encoding.digest_of.
export async function digestOf(value) {
  return sha256B64url(utf8(canonicalJson(value)));
}

export function publicMembers(jwk) {
  return { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y };
}

export async function thumbprint(jwk) {
  return digestOf({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
}

export async function makeKid(owner, jwk) {
  return owner + ":" + (await thumbprint(jwk)).slice(0, THUMBPRINT_CHARS_IN_KID);
}

// A new device key pair: the private half can sign but can never be exported.
export async function generateDeviceKey() {
  const pair = await crypto.subtle.generateKey(P256, false, ["sign", "verify"]);
  const jwk = publicMembers(await crypto.subtle.exportKey("jwk", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey: pair.publicKey, jwk };
}

export async function signJws(claims, privateKey, kid) {
  const header = b64urlEncode(utf8(canonicalJson({ alg: SIGNING_ALGORITHM, kid })));
  const payload = b64urlEncode(utf8(canonicalJson(claims)));
  const input = utf8(header + "." + payload);
  const signature = new Uint8Array(await crypto.subtle.sign(ES256, privateKey, input));
  return header + "." + payload + "." + b64urlEncode(lowS(signature));
}

function bigIntOf(bytes) {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return value;
}

function bytes32Of(value) {
  const out = new Uint8Array(32);
  for (let i = 31; i >= 0; i -= 1) {
    out[i] = Number(value & 0xffn);
    value >>= 8n;
  }
  return out;
}

// The ES256 signature r||s with s replaced by n - s when s > n/2 (both forms verify).
export function lowS(signature) {
  if (signature.length !== ES256_SIGNATURE_BYTES) throw new JoseError("not an ES256 signature");
  const s = bigIntOf(signature.subarray(32));
  if (s <= P256_HALF_ORDER) return signature;
  const low = new Uint8Array(ES256_SIGNATURE_BYTES);
  low.set(signature.subarray(0, 32));
  low.set(bytes32Of(P256_ORDER - s), 32);
  return low;
}

export function isLowS(signature) {
  if (signature.length !== ES256_SIGNATURE_BYTES) return false;
  const r = bigIntOf(signature.subarray(0, 32));
  const s = bigIntOf(signature.subarray(32));
  return r > 0n && r < P256_ORDER && s > 0n && s <= P256_HALF_ORDER;
}

function parseJsonPart(part) {
  try {
    return JSON.parse(decoder.decode(b64urlDecode(part)));
  } catch (error) {
    throw new JoseError("the token is not well-formed");
  }
}

// The claims of a compact JWS, read without checking anything: for display of a token
// whose signature is checked separately, never for a decision.
export function unverifiedClaims(token) {
  const parts = String(token).split(".");
  if (parts.length !== 3) throw new JoseError("the token is not well-formed");
  return parseJsonPart(parts[1]);
}

// The claims of a JWS signed with `jwk` under `kid`; anything else throws.
export async function verifyJws(token, jwk, kid) {
  const parts = String(token).split(".");
  if (parts.length !== 3) throw new JoseError("the token is not well-formed");
  const header = parseJsonPart(parts[0]);
  const members = Object.keys(header).sort().join(",");
  if (members !== "alg,kid" || header.alg !== SIGNING_ALGORITHM || header.kid !== kid) {
    throw new JoseError("the token is not signed by the expected key");
  }
  const key = await crypto.subtle.importKey("jwk", publicMembers(jwk), P256, false, ["verify"]);
  const signature = b64urlDecode(parts[2]);
  if (!isLowS(signature)) throw new JoseError("the signature is not valid");
  const valid = await crypto.subtle.verify(ES256, key, signature, utf8(parts[0] + "." + parts[1]));
  if (!valid) throw new JoseError("the signature is not valid");
  const claims = parseJsonPart(parts[1]);
  if (claims === null || typeof claims !== "object" || Array.isArray(claims)) {
    throw new JoseError("the signed payload is not an object");
  }
  return claims;
}

function uint32(value) {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value, false);
  return bytes;
}

function lengthPrefixed(bytes) {
  return concat([uint32(bytes.length), bytes]);
}

export function concat(arrays) {
  const total = arrays.reduce((sum, array) => sum + array.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const array of arrays) {
    out.set(array, offset);
    offset += array.length;
  }
  return out;
}

// RFC 7518 §4.6.2 Concat KDF with SHA-256: OtherInfo = AlgorithmID || PartyUInfo ||
// PartyVInfo || SuppPubInfo (keydatalen in bits), each of the first three length-prefixed.
export async function concatKdf(z, algorithmId, keyBits, apu = new Uint8Array(0), apv = new Uint8Array(0)) {
  const otherInfo = concat([
    lengthPrefixed(utf8(algorithmId)),
    lengthPrefixed(apu),
    lengthPrefixed(apv),
    uint32(keyBits),
  ]);
  const rounds = Math.ceil(keyBits / 256);
  const blocks = [];
  for (let counter = 1; counter <= rounds; counter += 1) {
    blocks.push(await sha256(concat([uint32(counter), z, otherInfo])));
  }
  return concat(blocks).slice(0, keyBits / 8);
}

// A compact JWE of `claims` to the recipient's encryption key (semops.crypto.jose.seal_for).
export async function sealFor(claims, recipientJwk, recipientKid) {
  const ecdh = { name: "ECDH", namedCurve: "P-256" };
  const recipient = await crypto.subtle.importKey("jwk", publicMembers(recipientJwk), ecdh, false, []);
  const ephemeral = await crypto.subtle.generateKey(ecdh, true, ["deriveBits"]);
  const z = new Uint8Array(
    await crypto.subtle.deriveBits({ name: "ECDH", public: recipient }, ephemeral.privateKey, 256),
  );
  const kekBytes = await concatKdf(z, KEY_WRAP_ALGORITHM, 256);
  const kek = await crypto.subtle.importKey("raw", kekBytes, { name: "AES-KW" }, false, ["wrapKey"]);
  const cek = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt"]);
  const wrapped = new Uint8Array(await crypto.subtle.wrapKey("raw", cek, kek, { name: "AES-KW" }));
  const epk = publicMembers(await crypto.subtle.exportKey("jwk", ephemeral.publicKey));
  const header = { alg: KEY_WRAP_ALGORITHM, enc: CONTENT_ALGORITHM, epk, kid: recipientKid };
  const protectedHeader = b64urlEncode(utf8(canonicalJson(header)));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: utf8(protectedHeader), tagLength: 128 },
      cek,
      utf8(canonicalJson(claims)),
    ),
  );
  const ciphertext = sealed.slice(0, sealed.length - 16);
  const tag = sealed.slice(sealed.length - 16);
  return [protectedHeader, b64urlEncode(wrapped), b64urlEncode(iv), b64urlEncode(ciphertext), b64urlEncode(tag)].join(".");
}

// The PIN block (semops.crypto.pin.make_pin_block): {v, pin, order_digest} sealed.
export async function makePinBlock(pin, orderDigest, processorKey) {
  if (!/^[0-9]{4,6}$/.test(pin)) throw new JoseError("a PIN is 4 to 6 digits");
  return sealFor({ v: 1, pin, order_digest: orderDigest }, processorKey.jwk, processorKey.kid);
}

// The digest a PIN block is bound to: every claim except the PIN block itself.
export async function boundDigest(claims) {
  const rest = {};
  for (const [key, value] of Object.entries(claims)) if (key !== "pin_block") rest[key] = value;
  return digestOf(rest);
}

// Claims with a PIN block bound to all the others, signed by the device key.
export async function signWithPin(draft, pin, processorKey, privateKey, kid) {
  const digest = await boundDigest(draft);
  const pinBlock = await makePinBlock(pin, digest, processorKey);
  return signJws({ ...draft, pin_block: pinBlock }, privateKey, kid);
}

// Whether SHA-256(fulfilment) is the condition (semops.crypto.hashlock.check_fulfilment).
export async function fulfils(fulfilment, condition) {
  try {
    const preimage = b64urlDecode(fulfilment);
    return preimage.length === 32 && (await sha256B64url(preimage)) === condition;
  } catch (error) {
    return false;
  }
}

export function randomId(prefix) {
  return prefix + "_" + b64urlEncode(crypto.getRandomValues(new Uint8Array(16)));
}
