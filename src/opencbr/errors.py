"""CbrError and the table of CBR error codes opencbr emits. Imports nothing of opencbr.

Each code is defined once here (one constant per code) with its HTTP status and default
message (reference: cbr-errors-and-client-quirks.md §6). Use cases raise
``CbrError(CODE, detail)``, the detail saying what exactly went wrong; the API layer is the
one place that turns it into ``{"error_code", "error_msg"}``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    message: str

    def with_status(self, status: int) -> ErrorCode:
        """The same code answered with another HTTP status: CBR answers a few codes with
        two (6302 is 404 for an unknown resource, 400 for one whose path no longer holds;
        APIGW.0301 is 404 for a token a validate call names but cannot find)."""
        return replace(self, status=status)


class CbrError(Exception):
    """A business error with a stable CBR code; ``detail`` replaces the default message."""

    def __init__(self, error: ErrorCode, detail: str | None = None) -> None:
        self.error = error
        self.detail = detail or error.message
        super().__init__(f"{error.code}: {self.detail}")


def _code(code: str, status: int, message: str) -> ErrorCode:
    return ErrorCode(code, status, message)


# Authentication and routing (what Huawei's API gateway answers).
UNAUTHORIZED = _code("APIGW.0301", 401, "Incorrect IAM authentication information")
API_NOT_FOUND = _code(
    "APIGW.0101", 404, "The API does not exist or has not been published in the environment."
)
ENTITY_TOO_LARGE = _code("APIGW.0201", 413, "Request entity too large.")
# Access keys (the IAM-style credential API).
CREDENTIAL_NOT_FOUND = _code("IAM.0004", 404, "Could not find the access key.")
USER_NOT_FOUND = _code("IAM.0005", 404, "Could not find the user.")
WRONG_PROJECT = _code("BackupService.8600", 403, "Not authenticated.")
FORBIDDEN_ROLE = _code("APIGW.0302", 403, "The IAM user is not authorized to access the API.")

# Generic. 9900 is also the answer to what opencbr does not offer: operations of CBR's API
# that only make sense on a public cloud (orders, organization policies, agents...),
# cross-account replication, unknown feature keys. CBR's table has no "not supported"
# code; 9900 is the code every CBR client already treats as a final refusal of the
# request. The detail names what is not supported.
INVALID_PARAMETER = _code("BackupService.9900", 400, "Parameter verification failed.")
INTERNAL_ERROR = _code("BackupService.9910", 500, "Unknown error.")

# Not found (404 so that openstacksdk's find_*/ignore_missing work).
VAULT_NOT_FOUND = _code("BackupService.6105", 404, "The vault does not exist.")
BACKUP_NOT_FOUND = _code("BackupService.6200", 404, "The backup does not exist.")
CHECKPOINT_NOT_FOUND = _code("BackupService.6217", 404, "The backup restore point does not exist.")
# Also (answered as 400) a registered path that no longer lies inside its root as
# registered: a component was swapped for a symlink, the root was removed from the
# configuration, the leaf changed kind (protectables.locate).
RESOURCE_NOT_FOUND = _code("BackupService.6302", 404, "The resource does not exist.")
OPERATION_LOG_NOT_FOUND = _code("BackupService.6500", 404, "The operation log does not exist.")
POLICY_NOT_FOUND = _code("BackupService.6000", 404, "The policy does not exist.")
VAULT_NOT_BOUND_TO_POLICY = _code(
    "BackupService.6002", 404, "The vault is not applied with the policy."
)

# Checkpoints and backups.
NOTHING_TO_BACKUP = _code("BackupService.0001", 400, "No resource is available for backup.")
VAULT_BUSY_BACKING_UP = _code("BackupService.1001", 400, "The vault is already executing a backup.")
RESOURCE_BEING_BACKED_UP = _code("BackupService.0002", 500, "Resources are being backed up.")
VAULT_STATUS_FORBIDS_BACKUP = _code(
    "BackupService.6113", 400, "Backup is not allowed in the current vault status."
)
VAULT_FULL = _code(
    "BackupService.6114", 400, "The used capacity of the vault exceeds the maximum capacity."
)
VAULT_TYPE_FORBIDS_BACKUP = _code(
    "BackupService.6124", 400, "Backup is not allowed for the current type of vaults."
)
BACKUP_IN_USE = _code(
    "BackupService.6216", 400, "The backup cannot be deleted because it is in use."
)

# Restore.
RESTORE_TARGET_BUSY = _code(
    "BackupService.2002",
    400,
    "The resource is being backed up. Restore the resource after the backup is complete.",
)
# Also a replication of a backup that is not available (cbr-api.md §2.4: code unconfirmed).
BACKUP_BAD_STATUS = _code(
    "BackupService.2005", 400, "Restoration is not allowed in the current backup status."
)
RESOURCE_RESTORING = _code("BackupService.2010", 400, "The resource is being restored.")

# Replication.
REPLICATION_TYPE_FORBIDDEN = _code(
    "BackupService.1002", 400, "Replication is not allowed for the current type of backups."
)
REGION_CANNOT_REPLICATE = _code(
    "BackupService.1005", 400, "The destination region does not support replication."
)
ALREADY_REPLICATED = _code(
    "BackupService.1009",
    400,
    "The backup is being replicated or has been replicated to the destination region.",
)
PROJECT_CANNOT_REPLICATE = _code(
    "BackupService.1011", 400, "The destination project does not support replication."
)
DESTINATION_VAULT_NOT_REPLICATION = _code(
    "BackupService.6119", 400, "The destination vault does not support replication."
)
DESTINATION_VAULT_NOT_FOUND = _code(
    "BackupService.6120", 400, "The destination vault does not exist."
)
VAULT_TYPE_FORBIDS_REPLICATION = _code(
    "BackupService.6128", 400, "Replication is not allowed for the current type of vaults."
)
DESTINATION_VAULT_FULL = _code(
    "BackupService.6129", 400, "The maximum capacity of the destination vault has been reached."
)
# Also a source chunk or manifest found corrupt (the detail says which).
REPLICA_IMPORT_FAILED = _code("BackupService.1006", 500, "Failed to import the backup replica.")

# Vaults and their resources.
VAULT_RESOURCES_OVER_LIMIT = _code(
    "BackupService.6100", 400, "The maximum number of vault resources has been reached."
)
VAULT_SIZE_INVALID = _code("BackupService.6101", 400, "Invalid vault capacity.")
RESOURCE_TYPE_MISMATCH = _code(
    "BackupService.6102", 400, "The vault does not support this resource type."
)
RESOURCE_IN_OTHER_VAULT = _code(
    "BackupService.6103", 400, "The resource has been associated with a vault."
)
DUPLICATE_RESOURCE = _code("BackupService.6104", 400, "Duplicate vault resources.")
VAULT_CANNOT_ADD_RESOURCES = _code(
    "BackupService.6108", 400, "New resources cannot be associated with the vault."
)
VAULT_HAS_RUNNING_BACKUP = _code("BackupService.6203", 400, "Performing backups.")
RESOURCE_REMOVING = _code("BackupService.6134", 400, "Resources are being removed from the vault.")
RESOURCE_NOT_IN_VAULT = _code(
    "BackupService.6135", 400, "The resource does not exist in the vault."
)

# Policies.
POLICY_QUOTA_REACHED = _code(
    "BackupService.6001", 400, "The maximum number of this type of policies has been reached."
)
POLICY_DESTINATION_FIXED = _code(
    "BackupService.6003",
    400,
    "The destination region cannot be changed because the policy has been applied to a"
    " replication vault.",
)
UNKNOWN_POLICY_TYPE = _code("BackupService.6117", 400, "Unknown policy type.")
POLICY_NOT_APPLICABLE = _code(
    "BackupService.6127", 400, "This policy cannot be applied to this vault."
)

# Tags of vaults.
TAGS_OVER_LIMIT = _code(
    "BackupService.6600", 400, "The maximum number of tags has been reached for the resource."
)
TAG_KEY_NOT_FOUND = _code("BackupService.6601", 404, "The key does not exist.")

# Backup metadata.
METADATA_BAD_STATUS = _code(
    "BackupService.6206", 400, "Metadata query is not allowed in the current backup status."
)

# Backup sharing (members).
SHARE_LIMIT_REACHED = _code(
    "BackupService.6701", 400, "The maximum number of backups that can be shared has been reached."
)
SHARE_BAD_STATUS = _code(
    "BackupService.6702", 400, "Only backups in the Available status can be shared."
)
SHARE_INVALID_PROJECT = _code(
    "BackupService.6704", 400, "Invalid project ID of the tenant for sharing."
)
MEMBER_NOT_FOUND = _code("BackupService.6705", 404, "The share member does not exist.")
MEMBER_UPDATE_INVALID = _code(
    "BackupService.6706", 400, "Invalid update parameter value for the share member."
)
SHARING_NOT_ALLOWED = _code("BackupService.6707", 400, "Backup sharing is not allowed.")
SHARED_BACKUP_NOT_DELETABLE = _code("BackupService.6711", 400, "Shared backup deletion failed.")
SHARE_VAULT_TYPE_MISMATCH = _code(
    "BackupService.6713",
    400,
    "The type of the vault accepting the shared backup and the backup resource type are different.",
)
SHARED_TWICE = _code(
    "BackupService.6714", 400, "A shared backup cannot be shared to the same member again."
)
