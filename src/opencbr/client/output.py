"""What a command prints on stdout: JSON (`-f json`, the API's own objects) or a table for
people (rich; ids are never cut short). Errors go to stderr as one `error:` line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from opencbr.client.progress import human_bytes


class Format(StrEnum):
    table = "table"
    json = "json"


def console() -> Console:
    """stdout; a pipe or a file gets a wide page rather than rich's 80 columns."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(width=int(os.environ.get("COLUMNS") or 200), highlight=False)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def emit(fmt: Format, data: Any, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """`data` as JSON, or `rows` as a table under `columns`."""
    if fmt == Format.json:
        emit_json(data)
        return
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(cell(value) for value in row))
    console().print(table)


def emit_fields(fmt: Format, data: Any, fields: Sequence[tuple[str, Any]]) -> None:
    """One object: JSON, or a two-column table of its fields."""
    emit(fmt, data, ("field", "value"), fields)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(item) for item in value)
    return str(value)


def size(count: int | None) -> str:
    return "" if count is None else human_bytes(count)


def age(stamp: str | None, now: datetime | None = None) -> str:
    """How long ago an API time (`2024-01-01T12:00:00Z`, or without a zone: UTC) was."""
    moment = parse_time(stamp)
    if moment is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit}{_rest(seconds % length, unit)}"
    return f"{seconds}s"


def _rest(seconds: int, unit: str) -> str:
    smaller = {"d": ("h", 3600), "h": ("m", 60), "m": ("s", 1)}[unit]
    amount = seconds // smaller[1]
    return f"{amount}{smaller[0]}" if amount else ""


def parse_time(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
