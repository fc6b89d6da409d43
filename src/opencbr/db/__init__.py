"""Metadata: SQLAlchemy 2 models (they are the domain objects), the engine/session and the
Alembic migrations. May import settings, errors and clock; never services, jobs or api.
"""
