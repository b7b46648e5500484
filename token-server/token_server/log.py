"""Structured JSON logs (structlog), one object per line on stdout."""

from __future__ import annotations

import logging

import structlog
from structlog.tracebacks import ExceptionDictTransformer

#: Tracebacks as data, without local variables: a frame inside the JWT signer holds the
#: API secret, and locals would put it in the log.
_TRACEBACKS = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))


def configure_logging(level: str = "INFO") -> None:
    """Route structlog to stdout as JSON lines with ISO UTC timestamps.

    Args:
        level: minimum level name (``DEBUG`` .. ``CRITICAL``).
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _TRACEBACKS,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(),  # sys.stdout at call time
        cache_logger_on_first_use=False,
    )
