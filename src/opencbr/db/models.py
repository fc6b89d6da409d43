"""Every model, imported in one place so that metadata and Alembic see all tables."""

from opencbr.db.base import Base
from opencbr.db.identity import Domain, Project, RoleAssignment, Token, User
from opencbr.db.vaults import Protectable, ProtectableVolume, Vault, VaultResource

__all__ = [
    "Base",
    "Domain",
    "Project",
    "Protectable",
    "ProtectableVolume",
    "RoleAssignment",
    "Token",
    "User",
    "Vault",
    "VaultResource",
]
