"""Huawei Cloud SDK AK/SK request signatures (``SDK-HMAC-SHA256``): verify them
(the server, ``api.signature``) and make them (the ``opencbr`` client, :func:`sign_request`).

The Huawei SDKs sign every call with the caller's access key (AK) and secret
key (SK): they build a *canonical request* from the method, path, query,
a list of headers and a hash of the body, hash it, and send
``HMAC-SHA256(SK, "SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<hash>")`` in the
``Authorization`` header. This module rebuilds that canonical request from
the request as the server received it, byte for byte the way
``huaweicloudsdkcore/signer/signer.py`` builds it, and compares signatures.

A valid signature proves the sender knows the SK and that the signed parts
of the request were not changed. To make that proof mean something,
:func:`verify_request` also insists that:

* ``host`` and ``x-sdk-date`` are signed, so a captured request can neither
  be replayed against another endpoint (region) nor at another time;
* ``X-Sdk-Date`` lies within ``max_skew`` of the server clock, which bounds
  the replay window;
* headers that change how the request is authenticated or scoped
  (``X-Sdk-Content-Sha256``, ``X-Project-Id``, ``X-Domain-Id``,
  ``X-Security-Token``) are signed whenever they are present, so nobody can
  add them to a signed request;
* a payload hash declared in ``X-Sdk-Content-Sha256`` is the body's real hash
  (``UNSIGNED-PAYLOAD`` only if the caller allows it), since the signature
  covers the declared value, not the body;
* signed headers occur once, and path and query are well-formed UTF-8, so the
  request the application reads is the one whose canonical form was signed.

Pure functions: no web framework, no database, no clock (``now`` is passed
in); the module imports nothing of opencbr, so every layer and the client may use
it. Failures raise :class:`SignatureError` with a reason meant for logs and for
the ``error_msg`` of a 401 response; reasons never contain the expected
signature.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
DEFAULT_MAX_SKEW = timedelta(minutes=15)
EMPTY_PAYLOAD_HASH = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

HEADER_DATE = "x-sdk-date"
HEADER_CONTENT_SHA256 = "x-sdk-content-sha256"
REQUIRED_SIGNED_HEADERS = ("host", HEADER_DATE)
# Present-but-unsigned, each of these would let a man in the middle change how
# a signed request is authenticated or scoped; the SDK signs them all.
SIGNED_IF_PRESENT = (HEADER_CONTENT_SHA256, "x-project-id", "x-domain-id", "x-security-token")

_DATE_RE = re.compile(r"\d{8}T\d{6}Z")  # strptime alone accepts 1-digit months/days
_HEADER_NAME_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")  # lower-case RFC 9110 token
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_AUTH_PARAMS = ("Access", "SignedHeaders", "Signature")

HeaderText = str | bytes
Headers = Mapping[str, str] | Iterable[tuple[HeaderText, HeaderText]]
"""Request headers: a mapping, or (name, value) pairs as received.

Pairs may be ``bytes`` (e.g. ASGI ``scope["headers"]``): names are decoded as
Latin-1 and values as UTF-8, because the SDK signs the Unicode value and sends
its UTF-8 bytes. Pass ``str`` values only if they were decoded as UTF-8.
"""
_HeaderIndex = dict[str, list[HeaderText]]  # lower-case name -> values, in order received


class SignatureError(Exception):
    """The request is not authentically signed; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignatureHeader:
    """The parts of ``Authorization: <algorithm> Access=…, SignedHeaders=…, Signature=…``."""

    algorithm: str
    access: str
    signed_headers: tuple[str, ...]
    signature: str  # lower-case hex


# --- Authorization header -------------------------------------------------


def parse_authorization(header: str) -> SignatureHeader:
    """Parse an SDK ``Authorization`` value; spaces after the commas are optional."""
    algorithm, params_text = _split_algorithm(header)
    params = _parse_auth_params(params_text)
    access = params["Access"]
    if not access or any(c.isspace() for c in access):
        raise SignatureError("Authorization has an empty or malformed Access")
    signature = params["Signature"]
    if not _HEX_RE.fullmatch(signature):
        raise SignatureError("Authorization Signature is not hexadecimal")
    return SignatureHeader(
        algorithm=algorithm,
        access=access,
        signed_headers=_parse_signed_headers(params["SignedHeaders"]),
        signature=signature.lower(),
    )


def _split_algorithm(header: str) -> tuple[str, str]:
    algorithm, _, params_text = header.strip().partition(" ")
    if not algorithm or not params_text.strip():
        raise SignatureError("Authorization must be '<algorithm> Access=…, SignedHeaders=…, …'")
    return algorithm, params_text


def _parse_auth_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in text.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq:
            raise SignatureError(f"Authorization parameter {part.strip()!r} has no '='")
        if name not in _AUTH_PARAMS:
            raise SignatureError(f"Authorization has unexpected parameter {name!r}")
        if name in params:
            raise SignatureError(f"Authorization repeats parameter {name}")
        params[name] = value.strip()
    missing = [name for name in _AUTH_PARAMS if name not in params]
    if missing:
        raise SignatureError(f"Authorization lacks {', '.join(missing)}")
    return params


def _parse_signed_headers(text: str) -> tuple[str, ...]:
    names = tuple(text.split(";"))
    for name in names:
        if not _HEADER_NAME_RE.fullmatch(name):
            raise SignatureError(f"SignedHeaders has a malformed header name {name!r}")
    if len(set(names)) != len(names):
        raise SignatureError("SignedHeaders names a header twice")
    return names


# --- Canonical request ----------------------------------------------------


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Headers,
    signed_headers: Iterable[str],
    body: bytes,
) -> str:
    """The SDK's canonical request for a request as received.

    ``raw_path`` and ``raw_query`` are still percent-encoded, exactly as on the
    wire (the query without its ``?``). Raises :class:`SignatureError` if a
    signed header is missing or repeated, or path/query is not valid UTF-8.
    """
    index = _index_headers(headers)
    return _canonical_request(method, raw_path, raw_query, index, tuple(signed_headers), body)


def _canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    index: _HeaderIndex,
    signed_headers: tuple[str, ...],
    body: bytes,
) -> str:
    return "\n".join(
        [
            method.upper(),
            canonical_uri(raw_path),
            canonical_query_string(raw_query),
            _canonical_headers(index, signed_headers),  # ends with "\n": a blank line follows
            ";".join(signed_headers),
            _payload_hash(index, body),
        ]
    )


def canonical_uri(raw_path: str) -> str:
    """Decode the path, re-encode each segment strictly, end it with ``/``.

    Decoding first makes ``%7E`` and ``~`` (or ``%2F`` and ``/``, as the SDK
    does) sign alike; the trailing slash is the SDK's, it is not on the wire.
    """
    segments = _unquote(raw_path, "path").split("/")
    uri = "/".join(_encode(segment) for segment in segments)
    return uri if uri.endswith("/") else uri + "/"


def canonical_query_string(raw_query: str) -> str:
    """Decoded ``key=value`` pairs sorted by key then value, re-encoded strictly.

    Decoding is percent-decoding only: ``+`` stays ``+`` as in the SDK (which
    itself never sends a raw ``+``).
    """
    pairs = sorted(_decode_pair(piece) for piece in raw_query.split("&") if piece)
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in pairs)


def _decode_pair(piece: str) -> tuple[str, str]:
    key, _, value = piece.partition("=")
    return _unquote(key, "query"), _unquote(value, "query")


def _unquote(text: str, where: str) -> str:
    # errors="strict": with the default "replace", %FF and %FE would both decode
    # to U+FFFD, so one signature would cover two different requests.
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise SignatureError(f"the {where} is not valid percent-encoded UTF-8") from None


def _encode(text: str) -> str:
    return quote(text, safe="~")  # RFC 3986 unreserved characters only


def _canonical_headers(index: _HeaderIndex, signed_headers: tuple[str, ...]) -> str:
    lines = []
    for name in signed_headers:
        value = _find_header(index, name)
        if value is None:
            raise SignatureError(f"signed header {name!r} is missing from the request")
        lines.append(f"{name}:{value}\n")
    return "".join(lines)


def _payload_hash(index: _HeaderIndex, body: bytes) -> str:
    # SDK order: an empty body hashes to the empty hash whatever the header
    # says; otherwise a non-empty X-Sdk-Content-Sha256 is taken literally.
    if not body:
        return EMPTY_PAYLOAD_HASH
    return _find_header(index, HEADER_CONTENT_SHA256) or hashlib.sha256(body).hexdigest()


# --- Headers --------------------------------------------------------------


def _index_headers(headers: Headers) -> _HeaderIndex:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    index: _HeaderIndex = {}
    for name, value in pairs:
        text = name.decode("latin-1") if isinstance(name, bytes) else name
        index.setdefault(text.lower(), []).append(value)
    return index


def _find_header(index: _HeaderIndex, name: str) -> str | None:
    """The stripped value of header ``name`` (lower case), None if absent."""
    values = index.get(name, [])
    if not values:
        return None
    if len(values) > 1:
        # Which copy would the application read? Refuse rather than guess.
        raise SignatureError(f"header {name!r} occurs more than once")
    value = values[0]
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError(f"header {name!r} is not valid UTF-8") from None
    return value.strip()  # the SDK strips values before signing


# --- Signature ------------------------------------------------------------


def string_to_sign(sdk_date: str, canonical_request: str) -> str:
    """``SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<hex SHA-256 of the canonical request>``."""
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def sign(secret: str, string_to_sign: str) -> str:
    """Hex HMAC-SHA256 keyed with the SK itself (no key derivation, unlike AWS)."""
    mac = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256)
    return mac.hexdigest()


# --- Signing (the client's side) ------------------------------------------


def sign_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    access: str,
    secret: str,
    now: datetime,
) -> dict[str, str]:
    """The headers to add to a request so that it is signed as the Huawei SDK signs it:
    ``X-Sdk-Date`` and ``Authorization``. ``headers`` must hold ``Host`` and every header
    of :data:`SIGNED_IF_PRESENT` the request carries (``X-Project-Id``); all of them are
    signed. ``raw_path`` and ``raw_query`` are as sent (percent-encoded, no ``?``)."""
    sdk_date = _naive_utc(now).strftime(DATE_FORMAT)
    signed = {name.lower(): value for name, value in headers.items()}
    signed[HEADER_DATE] = sdk_date
    names = tuple(sorted(signed))
    canonical = canonical_request(method, raw_path, raw_query, signed, names, body)
    signature = sign(secret, string_to_sign(sdk_date, canonical))
    return {
        "X-Sdk-Date": sdk_date,
        "Authorization": (
            f"{ALGORITHM} Access={access}, SignedHeaders={';'.join(names)}, Signature={signature}"
        ),
    }


# --- Verification ---------------------------------------------------------


def verify_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Headers,
    body: bytes,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    *,
    expected_hosts: Collection[str] | None = None,
    allow_unsigned_payload: bool = False,
) -> str:
    """Return the access key that signed this request, or raise :class:`SignatureError`.

    ``lookup_secret`` maps an AK to its SK (None if unknown or disabled).
    ``now`` is the server time, naive UTC (as :func:`opencbr.clock.now`) or
    aware. ``expected_hosts``, if given, are the ``Host`` values this listener
    answers to: a request signed for another endpoint is rejected.
    ``allow_unsigned_payload`` accepts ``X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD``
    (the SDK's choice for non-JSON bodies), which leaves the body unprotected.
    """
    index = _index_headers(headers)
    auth = _parse_supported_authorization(index)
    _check_signed_header_set(index, auth.signed_headers)
    _check_host(index, expected_hosts)
    sdk_date = _check_date(index, now, max_skew)
    _check_payload_claim(index, body, allow_unsigned_payload)
    _check_query(raw_query)
    secret = lookup_secret(auth.access)
    if secret is None:
        raise SignatureError(f"unknown access key {auth.access!r}")
    canonical = _canonical_request(method, raw_path, raw_query, index, auth.signed_headers, body)
    expected = sign(secret, string_to_sign(sdk_date, canonical))
    if not hmac.compare_digest(expected, auth.signature):
        raise SignatureError("signature does not match the request")
    return auth.access


def _parse_supported_authorization(index: _HeaderIndex) -> SignatureHeader:
    header = _find_header(index, "authorization")
    if not header:
        raise SignatureError("missing Authorization header")
    # Check the algorithm before the parameters: other schemes (V11-HMAC-SHA256
    # uses Credential=) would otherwise be reported as garbled.
    algorithm, _ = _split_algorithm(header)
    if algorithm != ALGORITHM:
        raise SignatureError(f"unsupported signing algorithm {algorithm!r} (only {ALGORITHM})")
    return parse_authorization(header)


def _check_signed_header_set(index: _HeaderIndex, signed_headers: tuple[str, ...]) -> None:
    for name in REQUIRED_SIGNED_HEADERS:
        if name not in signed_headers:
            raise SignatureError(f"SignedHeaders must include {name!r}")
    for name in SIGNED_IF_PRESENT:
        if name in index and name not in signed_headers:
            raise SignatureError(f"header {name!r} is present but not signed")


def _check_host(index: _HeaderIndex, expected_hosts: Collection[str] | None) -> None:
    if expected_hosts is None:
        return
    host = _find_header(index, "host")
    if host is None or host.lower() not in {h.lower() for h in expected_hosts}:
        raise SignatureError(f"request was signed for host {host!r}, not this endpoint")


def _check_date(index: _HeaderIndex, now: datetime, max_skew: timedelta) -> str:
    """Return the X-Sdk-Date value if well-formed and close enough to ``now``."""
    sdk_date = _find_header(index, HEADER_DATE)
    if sdk_date is None:
        raise SignatureError("missing X-Sdk-Date header")
    if not _DATE_RE.fullmatch(sdk_date):
        raise SignatureError(f"X-Sdk-Date {sdk_date!r} is not in the form YYYYMMDDTHHMMSSZ")
    try:
        signed_at = datetime.strptime(sdk_date, DATE_FORMAT)
    except ValueError:
        raise SignatureError(f"X-Sdk-Date {sdk_date!r} is not a valid time") from None
    skew = abs(signed_at - _naive_utc(now))
    if skew > max_skew:
        raise SignatureError(
            f"X-Sdk-Date {sdk_date} is {skew} away from server time (allowed: {max_skew})"
        )
    return sdk_date


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _check_payload_claim(index: _HeaderIndex, body: bytes, allow_unsigned: bool) -> None:
    # The signature covers the declared hash, not the body: a declared hash that
    # is not the body's would let anyone swap the body under a valid signature.
    declared = _find_header(index, HEADER_CONTENT_SHA256)
    if not declared or not body:
        return
    if declared == UNSIGNED_PAYLOAD:
        if not allow_unsigned:
            raise SignatureError("unsigned payloads (X-Sdk-Content-Sha256) are not accepted")
    elif declared.lower() != hashlib.sha256(body).hexdigest():
        raise SignatureError("X-Sdk-Content-Sha256 does not match the body")


def _check_query(raw_query: str) -> None:
    # '+' and '%2B' sign alike, but form decoding (what web frameworks use for
    # query parameters) reads a raw '+' as a space; the SDK never sends one.
    if "+" in raw_query:
        raise SignatureError("raw '+' in the query is ambiguous; encode it as %2B or %20")
