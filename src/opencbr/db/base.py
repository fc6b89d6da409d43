"""Declarative base, id generators and column helpers shared by every model module."""

from __future__ import annotations

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
