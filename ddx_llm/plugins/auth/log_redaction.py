"""Keep API keys out of Hypercorn's access log.

Hypercorn writes the access log itself, from its own view of the request: ``%(R)s``, ``%(Uq)s``
and ``%(q)s`` include the query string (``?api_key=...``), ``%({x-api-key}i)s`` and
``%({authorization}i)s`` print request headers, and ``%({NAME}e)s`` prints any environment
variable.  :class:`RedactSecrets` is a :class:`logging.Filter` on the ``hypercorn.access``
logger that rewrites those values in the record's arguments before any handler formats it, so
the protection holds whatever ``access_log_format`` a deployment uses.

Why a filter and not a Hypercorn ``logger_class``: ``logger_class`` cannot be set from
``conf/hypercorn.toml`` (Hypercorn stores the string and later fails calling it), and a filter
on the logger survives Hypercorn re-creating the logger's handlers.  The ``auth`` plugin installs
it at start-up in every worker process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping

ACCESS_LOGGER = "hypercorn.access"
REDACTED = "[redacted]"
QUERY_KEY = re.compile(r"((?:^|[?&;\s])api(?:_|%5f)key=)[^&;\s\"]*", re.IGNORECASE)
"""``api_key=<value>`` in a query string (also with the ``_`` percent-encoded)."""
SECRET_HEADERS = ("{x-api-key}i", "{authorization}i", "{cookie}i", "{proxy-authorization}i")
SECRET_ENV = re.compile(r"\{.*(key|secret|token|passw).*\}e", re.IGNORECASE)


def redact_query(text: str) -> str:
    """``text`` with every ``api_key=<value>`` replaced by ``api_key=[redacted]``."""
    return QUERY_KEY.sub(rf"\g<1>{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """Redact API keys from access-log records (the atoms mapping Hypercorn logs with)."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, MutableMapping):
            # Rewritten in place: Hypercorn's atoms mapping answers "-" for unknown keys, a
            # behaviour a copy into a plain dict would lose.
            for key, value in list(atoms.items()):
                if not isinstance(value, str) or value == "-":
                    continue
                if key in SECRET_HEADERS or SECRET_ENV.fullmatch(key):
                    atoms[key] = REDACTED
                elif QUERY_KEY.search(value):
                    atoms[key] = redact_query(value)
        else:
            try:
                message = record.getMessage()
            except Exception:  # a broken record is the handler's to report, not ours
                return True
            if QUERY_KEY.search(message):
                record.msg, record.args = redact_query(message), ()
        return True


def install(logger_name: str = ACCESS_LOGGER) -> RedactSecrets:
    """Add the filter to ``logger_name`` once; return the installed filter."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, RedactSecrets):
            return existing
    redactor = RedactSecrets()
    logger.addFilter(redactor)
    return redactor
