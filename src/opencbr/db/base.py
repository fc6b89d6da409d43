"""Declarative base, id generators and column helpers shared by every model module."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData
from sqlalchemy.orm import DeclarativeBase

from opencbr import clock

# Deterministic constraint names so that Alembic migrations match on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


def new_uuid() -> str:
    """CBR resource ids: UUIDv4 with dashes."""
    return str(uuid.uuid4())


def new_hex_id() -> str:
    """Keystone ids (projects, users, domains): 32 hex characters."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return clock.now()


def new_uuids(count: int) -> list[str]:
    """`count` UUIDv4 strings (as `new_uuid` makes them) from one read of the OS's RNG."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 4122 variant
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, len(h), 32)
    ]
