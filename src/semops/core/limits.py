"""Every bound in SEMOPS, in one place, each with the reason for its number.

A bound that is not here does not exist: bodies, fields, lists, queues, retries and
timeouts all take their limits from this module, so an auditor can read the whole
envelope of the system on one page. Units are the last part of each name.
"""

from __future__ import annotations

from typing import Final

# --- Money -------------------------------------------------------------------------------
# 10^15 minor units is 10 trillion EUR: above any single payment, far below 2^63, so sums
# of many amounts in a 64-bit database column cannot overflow.
AMOUNT_MAX_MINOR: Final = 10**15
# A payment of zero moves nothing and would only create noise in ledgers and positions.
AMOUNT_MIN_MINOR: Final = 1
# Typed amounts such as "12.50" are short; a long string is an attack, not an amount.
AMOUNT_TEXT_MAX_CHARS: Final = 32

# --- Identifiers and text ------------------------------------------------------------------
# Ids are 16 random bytes in base64url (22 chars) with a short prefix; 64 leaves room for
# ids made by other implementations without admitting unbounded strings.
ID_MAX_CHARS: Final = 64
ID_MIN_CHARS: Final = 8
# Processor and merchant ids are names people type in configuration: short and plain.
PARTY_ID_MAX_CHARS: Final = 32
# A one-letter id is a typo more often than a name; two allows short codes such as "mb".
PARTY_ID_MIN_CHARS: Final = 2
# A display name shows on a phone screen in one line; it also rides in the QR token.
DISPLAY_NAME_MAX_CHARS: Final = 40
# A payment reference: 35 characters as in ISO 20022 remittance / SEPA end-to-end ids.
REFERENCE_MAX_CHARS: Final = 35
# Account ids at a processor (IBAN is at most 34; MSISDN-based ids are shorter).
ACCOUNT_ID_MAX_CHARS: Final = 34
# Combining marks on one base character of a name or reference (after NFD): Vietnamese and
# pointed Hebrew carry up to three; more is a pile meant to hide or overdraw (UTS #39 §5.4).
COMBINING_MARKS_PER_BASE_MAX: Final = 4
# Passes of the confusable skeleton until it stops changing: every code point settles in
# two with the shipped data (semops.protocol.names); four leaves room for a new data file.
SKELETON_ROUNDS_MAX: Final = 4
# A reason text on a rejection, for people; the machine reason is the error code.
REASON_TEXT_MAX_CHARS: Final = 200
# A kid names a key in the directory: "<owner>:<thumbprint prefix>".
KID_MAX_CHARS: Final = 64
# An endpoint URL in the directory.
URL_MAX_CHARS: Final = 256

# --- Messages -----------------------------------------------------------------------------
# The request token must fit a QR code that a phone camera reads at a normal size.
REQUEST_TOKEN_MAX_BYTES: Final = 600
# A signed message on the wire (JWS compact). The largest is a PaymentOrder that nests the
# request token and a PIN block; 16 KiB is many times that and still cheap to refuse.
MESSAGE_MAX_BYTES: Final = 16 * 1024
# The signed directory grows with the number of processors and keys; bounded by the list
# limits below, it stays well inside 1 MiB.
DIRECTORY_MAX_BYTES: Final = 1024 * 1024
DIRECTORY_ENTRIES_MAX: Final = 1000
KEYS_PER_PARTY_MAX: Final = 8
# Revoked certificate serials listed in the signed directory: each stays listed until the
# certificate it names has expired (at most PARTY_CERT_VALIDITY_DAYS). A scheme of a thousand
# participants revoking one certificate each in a year fits; 40 hex digits each, the list
# stays under 50 KiB. A revocation beyond it is refused, never silently left out.
REVOKED_SERIALS_MAX: Final = 1000
# Changes to a participant that wait for the scheme operator (registrations not signed by
# the participant's current key). A few per participant cover a rotation and a retry;
# more is someone filling the queue. The list the operator reads is bounded too.
PENDING_REGISTRATIONS_PER_PARTY_MAX: Final = 4
PENDING_REGISTRATIONS_MAX: Final = 200
# TLS client certificates whose chain check is remembered by a scheme port (one per
# participant and rotation): re-checking a known certificate costs a dictionary look-up.
TLS_PEER_CACHE_MAX: Final = 2048
# How often the router re-reads participants and revocations, so that every worker of a
# router publishes (and enforces) a change another worker made within a few seconds.
DIRECTORY_RELOAD_INTERVAL_S: Final = 5
# A sealed body (JWE) carries a few ids: 4 KiB is generous.
SEALED_MAX_BYTES: Final = 4 * 1024
# A basket is summarised by its digest in messages; this bounds the basket a merchant may
# hand to the wallet alongside a request.
BASKET_LINES_MAX: Final = 100

# --- Time ---------------------------------------------------------------------------------
# Servers are NTP-synchronised; phones mostly are. Thirty seconds tolerates a phone that
# drifts a little without letting a stale message live noticeably longer.
CLOCK_SKEW_MAX_S: Final = 30
# A request the customer has not paid within ten minutes is stale (DESIGN.md §3).
REQUEST_TTL_DEFAULT_S: Final = 10 * 60
# Up to a day for invoices sent by link; longer is an invoice system, not a checkout.
REQUEST_TTL_MAX_S: Final = 24 * 60 * 60
REQUEST_TTL_MIN_S: Final = 30
# A transfer must finish quickly or be released (DESIGN.md §3); each hop takes its share.
TRANSFER_TTL_DEFAULT_S: Final = 30
TRANSFER_TTL_MAX_S: Final = 120
# The least a processor may be configured with: the payee processor gets the TTL less one
# hop margin, and five seconds is still ample for it to answer on a healthy network.
TRANSFER_TTL_MIN_S: Final = 10
# How much shorter the expiry is at each further hop, so the later hop times out first and
# the earlier one still has time to learn the outcome.
TRANSFER_HOP_MARGIN_S: Final = 5
# An order from a wallet is sent right after the PIN is typed; five minutes covers a slow
# network and a retry after a lost reply.
ORDER_TTL_S: Final = 5 * 60
# A message without a natural expiry is still refused when this old (replay window).
MESSAGE_TTL_MAX_S: Final = 24 * 60 * 60

# --- PIN ----------------------------------------------------------------------------------
PIN_MIN_DIGITS: Final = 4
PIN_MAX_DIGITS: Final = 6
# Consecutive wrong PINs that lock the credential (DESIGN.md §6).
PIN_ATTEMPTS_MAX: Final = 3

# --- Keys ---------------------------------------------------------------------------------
# Entropy handed to key derivation: 48 bytes (384 bits) reduced modulo the P-256 order
# leaves a bias below 2^-128 (FIPS 186-5 A.2.1).
KEY_SEED_BYTES: Final = 48
# The hash-lock fulfilment is 32 random bytes (DESIGN.md §3).
FULFILMENT_BYTES: Final = 32
# Random part of every id.
ID_RANDOM_BYTES: Final = 16
# Certificates: the root lives ten years offline; participants renew yearly.
ROOT_CERT_VALIDITY_DAYS: Final = 3650
PARTY_CERT_VALIDITY_DAYS: Final = 365
# DNS names plus IP addresses in one participant certificate: a service has a few names
# (loopback, its host, a load balancer); more than this is a misconfiguration.
CERT_SAN_NAMES_MAX: Final = 16
# Balances and sums of many amounts stay inside a signed 64-bit database column with a
# factor-of-two headroom, so no intermediate sum can overflow BIGINT.
BALANCE_ABS_MAX_MINOR: Final = 2**62
# Timestamps are integer Unix seconds; 2^34 s is the year 2514, far enough.
TIMESTAMP_MAX_S: Final = 2**34
# A machine reason code (an error registry code) is a short snake_case word.
REASON_CODE_MAX_CHARS: Final = 64
# Parsed public keys kept in memory: every processor and router key plus the devices active
# at one processor at a time; 4096 entries is a few MiB at most.
PUBLIC_KEY_CACHE_ENTRIES: Final = 4096
# Encoded JWS headers {alg, kid} kept per kid: a process signs under its own few keys (and
# their rotations); 64 is many times that, and the entries are a hundred bytes each.
SIGNING_HEADER_CACHE_ENTRIES: Final = 64
# SEMOPS messages nest at most four levels (directory -> entry -> key -> jwk); 32 leaves
# room and keeps recursion far from Python's stack limit inside a web framework.
JSON_DEPTH_MAX: Final = 32

# --- Ledger -------------------------------------------------------------------------------
# A payment moves money between two accounts; a configured fee adds one posting per fee
# account. Eight covers a payment with several fees and keeps checking one entry trivial.
LEDGER_ENTRY_POSTINGS_MAX: Final = 8
# A PEM certificate of a P-256 key with a few SAN entries is under 1 KiB; 4 KiB is ample.
CERTIFICATE_PEM_MAX_CHARS: Final = 4096
# Device authorisations and registrations are made right before they are sent: two
# minutes covers a slow network and clock skew, and limits the use of a captured one.
AUTH_TTL_MAX_S: Final = 120

# --- Wallet and merchant backend ----------------------------------------------------------
# A device authorisation header lives one minute: the call is made right after it is
# signed, and half of AUTH_TTL_MAX_S leaves room for a phone whose clock drifts.
DEVICE_AUTH_TTL_S: Final = 60
# A wallet call to its processor: an order crosses router and payee processor (each with a
# 30 s transfer budget at most), so the wallet waits a little longer than one transfer
# before it calls the order pending; reads are local to the processor and answer fast.
WALLET_ORDER_TIMEOUT_S: Final = 40.0
WALLET_READ_TIMEOUT_S: Final = 10.0
# A QR image handed to the wallet: a phone photo is a few MiB; larger is not a QR code.
QR_IMAGE_MAX_BYTES: Final = 16 * 1024 * 1024
# Its pixels, declared before any is decoded: 48 megapixels is a large phone camera.
QR_FILE_MAX_PIXELS: Final = 8000 * 6000
# A basket line's name and quantity, kept by the merchant (only its digest travels).
BASKET_NAME_MAX_CHARS: Final = 80
BASKET_QUANTITY_MAX: Final = 10_000
# The merchant backend's calls to its own processor (create a request, refund, status).
MERCHANT_CALL_TIMEOUT_S: Final = 10.0
# The fallback poll for requests whose notice has not arrived: every few seconds, a bounded
# batch per pass, so a merchant with many open requests cannot flood its processor.
MERCHANT_POLL_INTERVAL_S: Final = 5.0
MERCHANT_POLL_BATCH_MAX: Final = 50
# Orders listed in one page of the merchant API and in the wallet's local history.
ORDERS_PAGE_MAX: Final = 100

# --- Processor service --------------------------------------------------------------------
# An activation code is handed over out of band (SMS, letter, branch); a day is enough to
# install the wallet and short enough that a lost code soon becomes useless.
ACTIVATION_CODE_TTL_S: Final = 24 * 60 * 60
# A processor's call to the router with a prepare or refund: the router waits up to 10 s
# for the other processor, so 15 s usually brings the decision back, and it stays well
# inside TRANSFER_TTL_DEFAULT_S so a timed-out call ends while the transfer can still be
# resolved by asking.
ROUTER_CALL_TIMEOUT_S: Final = 15.0
# Fetching the directory, registering, or asking for one transfer's state is local work
# at the router: ten seconds means it is down or overloaded.
ROUTER_QUERY_TIMEOUT_S: Final = 10.0
# The directory is re-read this often even when nothing looks unknown (new participants,
# suspensions, key rotation). On demand -- a wallet reading the configuration, a message
# naming an unknown kid or processor -- at most once a second: a processor that joined a
# moment ago is payable a second later, and a flood of bogus kids costs the router one
# cheap GET of a cached document per second.
DIRECTORY_REFRESH_INTERVAL_S: Final = 15
DIRECTORY_REFRESH_MIN_INTERVAL_S: Final = 1
# Registration is retried until the router answers, backing off to this cap.
REGISTRATION_RETRY_MAX_S: Final = 5.0
# In-doubt transfers and refunds are asked about every couple of seconds (a wallet waits
# for them), a bounded batch per pass so a long router outage cannot build a huge burst.
IN_DOUBT_POLL_INTERVAL_S: Final = 2.0
IN_DOUBT_BATCH_MAX: Final = 100
# A refund the router or the payer side cannot take now (a processor suspended or away, a
# net-debit cap reached) is tried again, with a new network refund id once the last
# attempt is known never to commit, for at most a day: long enough to outlast an outage or
# the end of a settlement window, short enough that the merchant's money is not held
# forever. Each wait is a quarter of the time the refund has already waited (so attempts
# thin out geometrically), within these bounds.
REFUND_RETRY_WINDOW_S: Final = 24 * 60 * 60
REFUND_RETRY_DELAY_MIN_S: Final = 2
REFUND_RETRY_DELAY_MAX_S: Final = 10 * 60
# Entries in one wallet history answer and rows in one back-office list: a phone screen
# or an operator page, not an export.
WALLET_HISTORY_MAX: Final = 50
ADMIN_LIST_MAX: Final = 100
# A phone number in E.164 has at most 15 digits plus the leading '+'.
PHONE_MAX_CHARS: Final = 16
# Activation codes are typed by a person from a letter or SMS: 8 characters at least
# (about 40 bits from a 32-symbol alphabet, with a short expiry and single use), 32 at most.
ACTIVATION_CODE_MIN_CHARS: Final = 8
ACTIVATION_CODE_MAX_CHARS: Final = 32
