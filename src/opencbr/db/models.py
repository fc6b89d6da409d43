"""Every model, imported in one place so that metadata and Alembic see all tables."""

from opencbr.db.backups import (
    Backup,
    BackupChunk,
    BackupMember,
    Checkpoint,
    OperationLog,
    ReplicationPlan,
    ReplicationRecord,
    VaultChunk,
    VaultVerifyState,
)
from opencbr.db.base import Base
from opencbr.db.credentials import Credential, CredentialProject
from opencbr.db.identity import Domain, Project, RoleAssignment, Token, User
from opencbr.db.keys import DataKey
from opencbr.db.policies import Policy, PolicyBinding, PolicyRun
from opencbr.db.service_state import HousekeepingClaim, ReplicationThrottle, ServiceValue
from opencbr.db.vaults import (
    Protectable,
    ProtectableVolume,
    Vault,
    VaultMigration,
    VaultResource,
    VaultTag,
)

__all__ = [
    "Backup",
    "BackupChunk",
    "BackupMember",
    "Base",
    "Checkpoint",
    "Credential",
    "CredentialProject",
    "DataKey",
    "Domain",
    "HousekeepingClaim",
    "OperationLog",
    "Policy",
    "PolicyBinding",
    "PolicyRun",
    "Project",
    "Protectable",
    "ProtectableVolume",
    "ReplicationPlan",
    "ReplicationRecord",
    "ReplicationThrottle",
    "RoleAssignment",
    "ServiceValue",
    "Token",
    "User",
    "Vault",
    "VaultChunk",
    "VaultMigration",
    "VaultResource",
    "VaultTag",
    "VaultVerifyState",
]
