"""Keep API keys out of Hypercorn's access log.

Hypercorn writes the access log itself, from its own view of the request: ``%(R)s``, ``%(Uq)s``
and ``%(q)s`` include the query string (``?api_key=...``), ``%({x-api-key}i)s`` and
``%({authorization}i)s`` print request headers, and ``%({NAME}e)s`` prints any environment
variable.  :class:`RedactSecrets` is a :class:`logging.Filter` on the ``hypercorn.access``
logger that rewrites those values in the record's arguments before any handler formats it, so
the protection holds whatever ``access_log_format`` a deployment uses.

Which query fields are keys is decided by :func:`.keys.query_key_fields`, the function
authentication reads the key with: whatever encoding of the name or the value authenticates
(``%61pi%5Fkey``, ``+``, a ``;`` inside the value, a repeated field) is redacted, whole.  Every
value is then also scanned with :func:`redact_text`, a deliberate superset (any ``?``, ``&``,
``;`` or word start may begin a field; names compared without case) for URLs that are not the
request's own query: a ``Referer``, a path holding an encoded ``?``, a plain log message.

Cost: the filter runs on every request, so it touches only the atoms the record's format
prints.  Hypercorn's atoms hold every request and response header and every environment
variable, about a hundred values; ``%(h)s "%(r)s" %(s)s ...`` prints six.  What the format
prints is worked out once per format string (which atoms, and which of them are secret:
redacted whole), so a request costs a few dictionary lookups and, for the atoms that are
printed, :func:`redact_text`'s fast check.  Records that are not Hypercorn's (any other
arguments) are scanned whole, as before.

Why a filter and not a Hypercorn ``logger_class``: ``logger_class`` cannot be set from
``conf/hypercorn.toml`` (Hypercorn stores the string and later fails calling it), and a filter
on the logger survives Hypercorn re-creating the logger's handlers.  The ``auth`` plugin installs
it at start-up in every worker process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from urllib.parse import unquote_plus

from .keys import QUERY_PARAMETER, QUERY_SEPARATOR, query_key_fields

ACCESS_LOGGER = "hypercorn.access"
REDACTED = "[redacted]"
QUERY_ATOM = "q"
"""Hypercorn's atom holding the request's query string, as it also appears in ``R``/``Uq``."""
SECRET_HEADERS = ("{x-api-key}i", "{authorization}i", "{cookie}i", "{proxy-authorization}i")
SECRET_ENV = re.compile(r"\{.*(key|secret|token|passw).*\}e", re.IGNORECASE)
WORD = re.compile(r"\S+")
FIELD_START = re.compile(r"[?&;]")
LONGEST_NAME = 3 * len(QUERY_PARAMETER)
"""The longest raw spelling of ``api_key`` (every character percent-encoded)."""


def redact_query(query: str) -> str:
    """``query`` with the raw value of every ``api_key`` field, as authentication reads the
    query (:func:`.keys.query_key_fields`), replaced by ``[redacted]``."""
    spans = [(start, end) for start, end, _ in query_key_fields(query) if end > start]
    return _replace(query, spans)


def redact_text(text: str) -> str:
    """``text`` (a URL, a request line, a header, a message) with anything that may be an
    ``api_key`` value replaced by ``[redacted]``: in every whitespace-separated word, a field
    may start at the word's start or after any ``?``, ``&`` or ``;``; a field whose name is
    ``api_key`` once ``+`` and percent-escapes are decoded (any case) has its value, up to the
    next ``&`` or the end of the word, redacted.  Linear in the length of ``text``."""
    if "=" not in text or ("%" not in text and QUERY_PARAMETER not in text.lower()):
        return text  # no spelling of the name can be in it: the common case, kept cheap
    spans: list[tuple[int, int]] = []
    for word in WORD.finditer(text):
        starts = [word.start()] + [m.end() for m in FIELD_START.finditer(text, *word.span())]
        covered = word.start()
        for begin in starts:
            equals = text.find("=", begin, min(begin + LONGEST_NAME, word.end()) + 1)
            if equals < 0 or begin < covered or FIELD_START.search(text, begin, equals):
                continue
            if unquote_plus(text[begin:equals]).lower() != QUERY_PARAMETER:
                continue
            end = text.find(QUERY_SEPARATOR, equals + 1, word.end())
            end = word.end() if end < 0 else end
            if end > equals + 1:
                spans.append((equals + 1, end))
            covered = end  # later fields up to here lie inside this value
    return _replace(text, spans)


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each of the ascending, non-overlapping ``spans`` replaced by REDACTED."""
    if not spans:
        return text
    parts, last = [], 0
    for start, end in spans:
        parts += [text[last:start], REDACTED]
        last = end
    parts.append(text[last:])
    return "".join(parts)


class RedactSecrets(logging.Filter):
    """Redact API keys from access-log records (the atoms mapping Hypercorn logs with)."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, MutableMapping):
            redact_atoms(atoms, printed(record.msg))
        else:
            try:
                message = record.getMessage()
            except Exception:  # a broken record is the handler's to report, not ours
                return True
            redacted = redact_text(message)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


FORMAT_KEY = re.compile(r"%\(([^)]*)\)")
_PRINTED: dict[str, tuple[tuple[str, bool], ...] | None] = {}


def printed(fmt: object) -> tuple[tuple[str, bool], ...] | None:
    """The atoms a ``%(name)s`` format prints, as ``(key, secret)`` pairs: the key as the atoms
    mapping stores it (``{...}`` names lowercased, as Hypercorn looks them up) and whether the
    value is a secret to redact whole.  None when ``fmt`` names no atom (every atom is then
    treated as printed).  Worked out once per format."""
    if not isinstance(fmt, str):
        return None
    if fmt not in _PRINTED:
        keys = dict.fromkeys(
            key.lower() if key.startswith("{") else key for key in FORMAT_KEY.findall(fmt)
        )
        _PRINTED[fmt] = tuple((key, _secret(key)) for key in keys) or None
    return _PRINTED[fmt]


def _secret(key: str) -> bool:
    return key in SECRET_HEADERS or bool(SECRET_ENV.fullmatch(key))


def redact_atoms(atoms: MutableMapping, keys: tuple[tuple[str, bool], ...] | None = None) -> None:
    """Rewrite Hypercorn's atoms in place: secret headers and environment variables whole;
    the request's query string (``q``) exactly as authentication parses it, wherever it
    appears (``q``, ``Uq``, ``R``); every other value through :func:`redact_text`.

    ``keys`` (from :func:`printed`) limits the work to the atoms the format prints; None
    rewrites every atom.  In place: Hypercorn's atoms mapping answers "-" for unknown keys, a
    behaviour a copy into a plain dict would lose.
    """
    query = atoms.get(QUERY_ATOM)
    exact = redact_query(query) if isinstance(query, str) and query else None
    if keys is None:
        keys = tuple((key, _secret(key)) for key in list(atoms))
    for key, secret in keys:
        original = atoms.get(key)
        if not isinstance(original, str) or original == "-":
            continue
        if secret:
            atoms[key] = REDACTED
            continue
        value = original
        if exact is not None and exact != query:
            value = value.replace(query, exact)  # type: ignore[arg-type]
        value = redact_text(value)
        if value is not original:
            atoms[key] = value


def install(logger_name: str = ACCESS_LOGGER) -> RedactSecrets:
    """Add the filter to ``logger_name`` once; return the installed filter."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, RedactSecrets):
            return existing
    redactor = RedactSecrets()
    logger.addFilter(redactor)
    return redactor
