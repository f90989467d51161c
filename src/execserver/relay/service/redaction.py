"""A logging filter that keeps capabilities out of aiohttp's own log records.

The relay never logs a token, ticket, authorization or key itself, and its access log omits
query strings; but aiohttp may put a request line (which holds the ticket) or a header into
an error message. This filter rewrites such records of the `aiohttp.*` loggers: `ticket=…`
values and `Bearer …` credentials become `<redacted>`, in the message and in the formatted
exception.
"""

from __future__ import annotations

import logging
import re
from typing import Final

AIOHTTP_LOGGERS: Final = (
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
)
_SECRETS: Final = re.compile(r"(ticket=)[^&\s'\"\\]+|(bearer\s+)[^\s'\"\\]+", re.IGNORECASE)
_FORMATTER: Final = logging.Formatter()


def redact(text: str) -> str:
    """`text` with ticket values and bearer credentials replaced by `<redacted>`."""
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(2)) + "<redacted>", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and exception text with `redact()`; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
            record.exc_info = None
        return True


_FILTER: Final = RedactingFilter()


def install() -> None:
    """Attach the filter to aiohttp's loggers (once per process)."""
    for name in AIOHTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


__all__ = ["RedactingFilter", "install", "redact"]
