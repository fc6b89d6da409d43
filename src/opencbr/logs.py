"""Logging: one configuration for structlog and the standard library (uvicorn, Huey,
SQLAlchemy), written to stderr one line per event.

Every event becomes the same fields, `timestamp` (UTC, ISO 8601 with `Z`), `level`,
`logger`, `event`, then the event's own keys, rendered either as `key=value` pairs
(`log_format = "plain"`, the default) or as one JSON object (`log_format = "json"`).
Tracebacks are the plain text one (or a list of frames in JSON) without local variables:
locals once put a submitted password into the log and made each error a megabyte.

Secrets are never passed to a logger; `redact` is the safety net behind that rule: it masks
the value of every sensitive key (Authorization, X-Auth-Token, password, secret, sk,
token...) and of `name: value`, `name=value` and `("name", "value")` pairs and the password
of a `scheme://user:password@` URL inside any string, exception texts included.

Modules keep using `structlog.get_logger(__name__)`. `configure()` may run again (each app
built in a process calls it); it replaces only the handler it installed itself.

Imports only `opencbr.settings`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from opencbr.settings import Settings

REDACTED = "[redacted]"
# Libraries whose INFO lines are noise for an operator (a line per task, per statement,
# per migration step on every command): only their warnings and errors are written.
QUIET_LIBRARIES = ("huey", "sqlalchemy", "alembic")
# Frames kept of a JSON traceback (first and last halves); the plain one is Python's own.
MAX_FRAMES = 30
FIRST_KEYS = ("timestamp", "level", "logger", "event")

_SENSITIVE_NAME = (
    r"authorization|x[-_]auth[-_]token|x[-_]subject[-_]token|x[-_]security[-_]token"
    r"|[\w-]*password|passwd|[\w-]*secret(?:[-_]?key)?|sk|[\w-]*token"
    r"|input_value"  # pydantic's errors quote the refused input: it may be a password
)
# `name: value`, `name=value`, `"name": "value"`, `b'name': b'value'` inside a string; a
# value that opens a nested object (`{`, `[`) is left to the inner pairs.
_PAIR = re.compile(
    rf"""(?ix)(?<![\w-])(?P<key>["']?(?:{_SENSITIVE_NAME})["']?\s*[:=]\s*b?)
    (?:(?P<q>["'])(?P<quoted>(?:\\.|(?!(?P=q)).)*)(?P=q)|(?P<bare>[^\s"',;&{{}}\[\]()]+))"""
)
# `("x-auth-token", "value")`: a header as a pair, as in an ASGI scope or a header list.
_TUPLE = re.compile(
    rf"""(?ix)(?P<key>b?(?P<kq>["'])(?:{_SENSITIVE_NAME})(?P=kq)\s*,\s*b?)
    (?P<q>["'])(?P<quoted>(?:\\.|(?!(?P=q)).)*)(?P=q)"""
)
# An Authorization value runs to the end of its line: "SDK-HMAC-SHA256 Access=…, Signature=…".
_AUTHORIZATION_LINE = re.compile(r"(?i)(?<![\w-])(authorization\s*:\s*)(?![\s\"'])[^\n\"']+")
# The password of a URL's user part: `redis://:pw@host/13`, `postgresql://u:pw@host/db`
# (a queue or database URL inside a driver's error or a traceback).
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]*:)[^\s/@'\"]+(?=@)")
_SENSITIVE_KEY = re.compile(rf"(?i)(?:{_SENSITIVE_NAME})")


def is_sensitive_key(key: str) -> bool:
    return _SENSITIVE_KEY.fullmatch(key) is not None


def redact_text(text: str) -> str:
    """`text` with the value of every sensitive pair it holds masked."""
    text = _AUTHORIZATION_LINE.sub(lambda m: m.group(1) + REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)
    text = _TUPLE.sub(lambda m: f"{m['key']}{m['q']}{REDACTED}{m['q']}", text)
    return _PAIR.sub(_mask_pair, text)


def _mask_pair(match: re.Match[str]) -> str:
    if match["q"]:
        return f"{match['key']}{match['q']}{REDACTED}{match['q']}"
    return f"{match['key']}{REDACTED}"


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {key: _redact_item(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return value


def _redact_item(key: str, value: Any) -> Any:
    if is_sensitive_key(key) and value not in (None, ""):
        return REDACTED
    return _redact_value(value)


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask sensitive keys and sensitive pairs in every string."""
    return {key: _redact_item(key, value) for key, value in event_dict.items()}


def render_plain(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> str:
    """`key=value` pairs on one line; a value with spaces, quotes, `=` or control
    characters is a JSON string (so newlines in a traceback become `\\n`)."""
    return " ".join(f"{key}={_plain_value(value)}" for key, value in _ordered(event_dict))


def _plain_value(value: Any) -> str:
    text = value if isinstance(value, str) else _as_text(value)
    if text and _BARE_VALUE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


_BARE_VALUE = re.compile(r"[^\s\"'=\\\x00-\x1f\x7f]+")


def _as_text(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def render_json(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> str:
    return json.dumps(dict(_ordered(event_dict)), ensure_ascii=False, default=str)


def _ordered(event_dict: EventDict) -> list[tuple[str, Any]]:
    first = [(key, event_dict[key]) for key in FIRST_KEYS if key in event_dict]
    rest = [(key, value) for key, value in event_dict.items() if key not in FIRST_KEYS]
    return first + rest


# --- configuration -------------------------------------------------------------------

_LOGGED = "_opencbr_logged"  # set on an exception the app has logged (see `mark_logged`)


def mark_logged(exc: BaseException) -> None:
    """Tell the log that `exc` is already written: the server's own report of the same
    exception (uvicorn's "Exception in ASGI application") is then dropped."""
    setattr(exc, _LOGGED, True)


class _DropLoggedExceptions(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and getattr(exc, _LOGGED, False))


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time (a test's capture included)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _exception_processor(log_format: str) -> Processor:
    if log_format == "json":
        frames = ExceptionDictTransformer(show_locals=False, max_frames=MAX_FRAMES)
        return structlog.processors.ExceptionRenderer(frames)
    return structlog.processors.format_exc_info  # Python's traceback text, no locals


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of every log line: exceptions, redaction, then the renderer."""
    renderer: Callable[[WrappedLogger, str, EventDict], str]
    renderer = render_json if log_format == "json" else render_plain
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _exception_processor(log_format),
            redact,
            renderer,
        ],
    )


def configure(settings: Settings) -> None:
    """Route structlog and the standard library's logging through one stderr handler."""
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: structlog.testing.capture_logs must still see module-level loggers
        # already used (events are rare; the lookup per event costs microseconds).
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.set_name("opencbr")
    handler.setFormatter(formatter(settings.log_format))
    handler.addFilter(_DropLoggedExceptions())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "opencbr"]:
        root.removeHandler(old)
    root.addHandler(handler)
    level = logging.getLevelName(settings.log_level.upper())
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
