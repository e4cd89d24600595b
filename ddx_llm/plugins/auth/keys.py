"""API keys for the ``auth`` plugin: where a request presents one, and which configured key it is.

Keys are hashed once, when the :class:`KeyRing` is built; a presented key is hashed and its
digest compared with *every* stored digest with :func:`hmac.compare_digest`, without stopping at
a match, so neither the comparison nor the loop tells an attacker how close a guess came or which
entry matched.  SHA-256 (not a per-process HMAC secret) so that keys may also be configured as
digests only, and so the identity derived from a key is the same in every worker and replica
(a rate limit shared through Redis needs that).

:func:`query_key_fields` is the one definition of "the ``api_key`` query parameter": it finds
the fields exactly as :func:`urllib.parse.parse_qsl` reads them, with the position of each raw
value, so authentication (:func:`presented_key`) and access-log redaction
(:mod:`.log_redaction`) cannot disagree about which bytes are a key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from starlette.types import Scope

KEY = re.compile(r"[\x21-\x7e]+")
"""A key is visible ASCII without spaces (it must travel in a header and a query string)."""
DIGEST = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
QUERY_PARAMETER = "api_key"
QUERY_SEPARATOR = "&"
"""The only field separator (``parse_qsl``'s default since Python 3.10: ``;`` is not one)."""


def digest(key: str) -> bytes:
    """The stored form of a key: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode()).digest()


def key_identity(key_digest: bytes) -> str:
    """The short, non-reversible identity of an unnamed key: ``key-`` + 8 hex of its digest."""
    return "key-" + key_digest.hex()[:8]


def check_key(key: str) -> str:
    """Validate one configured key (raises ValueError without echoing it)."""
    if not KEY.fullmatch(key):
        raise ValueError("an API key must be visible ASCII characters without spaces")
    return key


def parse_digest(name: str, value: str) -> bytes:
    """Validate one ``name = "sha256:<hex>"`` entry; return the digest bytes."""
    if not NAME.fullmatch(name):
        raise ValueError(f"key name {name!r}: use 1-64 of A-Z a-z 0-9 . _ -")
    match = DIGEST.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"key {name!r}: expected 64 hex digits of SHA-256, optionally 'sha256:'")
    return bytes.fromhex(match.group(1))


@dataclass(frozen=True)
class KeyRing:
    """The configured keys as ``(digest, identity)`` pairs; empty means auth is bypassed."""

    entries: tuple[tuple[bytes, str], ...] = ()

    @classmethod
    def build(cls, keys: Iterable[str], named_digests: Mapping[str, str]) -> KeyRing:
        """Hash ``keys`` and add ``named_digests`` (name → SHA-256 hex).  A key that also has
        a name gets the name as identity; duplicates are stored once."""
        by_digest: dict[bytes, str] = {}
        for key in keys:
            key_digest = digest(check_key(key))
            by_digest[key_digest] = key_identity(key_digest)
        for name, value in named_digests.items():
            by_digest[parse_digest(name, value)] = name
        return cls(tuple(by_digest.items()))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def identify(self, presented: str) -> str | None:
        """The identity of ``presented`` if it is a configured key, else None.

        Every stored digest is compared, whatever matched before.
        """
        candidate = hashlib.sha256(presented.encode()).digest()
        found: str | None = None
        for stored, identity in self.entries:
            if hmac.compare_digest(stored, candidate):
                found = identity
        return found


def query_key_fields(query: str) -> Iterator[tuple[int, int, str]]:
    """Every ``api_key`` field of ``query``, as ``(start, end, value)``: ``query[start:end]`` is
    the raw value and ``value`` its decoded text.

    Parsed exactly as :func:`urllib.parse.parse_qsl` parses with its defaults: fields are split
    at ``&`` only; a field without ``=`` is skipped; name and value are split at the first
    ``=``; both are decoded with :func:`urllib.parse.unquote_plus` (``+`` is a space, escapes
    as UTF-8, invalid bytes replaced).  So ``%61pi%5Fkey``, ``api_k%65y`` or ``api%5fkey`` name
    the parameter; ``API_KEY`` does not.  Empty values are yielded too (``parse_qsl`` drops
    them; :func:`presented_key` treats them as absent).
    """
    position = 0
    for field in query.split(QUERY_SEPARATOR):
        name, equals, raw = field.partition("=")
        if equals and unquote_plus(name) == QUERY_PARAMETER:
            start = position + len(name) + 1
            yield start, start + len(raw), unquote_plus(raw)
        position += len(field) + len(QUERY_SEPARATOR)


def presented_key(scope: Scope) -> str | None:
    """The key a request presents, by precedence: ``X-API-Key``, ``Authorization: Bearer``,
    the first non-empty ``api_key`` query field (:func:`query_key_fields`).  Empty values
    count as absent."""
    bearer = None
    for name, value in scope["headers"]:
        if name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
        if name == b"authorization" and bearer is None:
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
    if bearer is not None:
        return bearer
    query = scope.get("query_string", b"")
    if b"=" not in query:
        return None
    for _start, _end, value in query_key_fields(query.decode("latin-1")):
        if value:
            return value
    return None
