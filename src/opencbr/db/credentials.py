"""Permanent access keys (AK/SK) of users, for the Huawei SDK's request signing.

The server must recompute each request's HMAC, so it needs the secret itself: the row keeps
it encrypted (``services.credentials`` holds the key, outside the database), never in clear.

A key minted by a project admin for another user is ``project_scoped``: it may act only in
the projects listed for it in ``credential_projects`` (those its minter administered when
minting), whatever roles its user gains later.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, false
from sqlalchemy.orm import Mapped, mapped_column

from opencbr.db.base import Base, utcnow

CREDENTIAL_STATUSES = ("active", "inactive")


class Credential(Base):
    __tablename__ = "credentials"

    # The access key id (AK): 20 upper-case letters and digits, like IAM's.
    access: Mapped[str] = mapped_column(String(20), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Fernet token of "<access>\n<secret>": binding the AK in stops a row's ciphertext
    # from being copied into another row.
    secret_ciphertext: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="active")
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # False: the key acts wherever its user holds a role (minted by the user or the operator).
    project_scoped: Mapped[bool] = mapped_column(default=False, server_default=false())


class CredentialProject(Base):
    """A project a ``project_scoped`` key may act in."""

    __tablename__ = "credential_projects"

    access: Mapped[str] = mapped_column(
        ForeignKey("credentials.access", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True, index=True
    )
