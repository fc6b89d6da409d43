"""CBR's feature flags (cbr-features), answered for what opencbr does in the caller's region.

Keys are CBR's; values are derived from the configuration, never claimed: replication is
enabled where the region has destinations; opencbr has no hybrid-cloud gateway (DGW) regions
and no multi-AZ ("double AZ") backups.
"""

from __future__ import annotations

from typing import Any

from opencbr.errors import INVALID_PARAMETER, CbrError
from opencbr.services.regions import replication_capabilities
from opencbr.settings import Settings


def features(settings: Settings, region: str) -> dict[str, Any]:
    """Every feature key opencbr answers, in a stable order, with its value in `region`."""
    destinations = replication_capabilities(settings, region)[0].replication_destinations
    return {
        "features.backup_double_az": False,
        "replication.destination_dgw_regions": [],
        "replication.destination_regions": destinations,
        "replication.enable": bool(destinations),
        "replication.source_region": region,
    }


def feature(settings: Settings, region: str, key: str) -> dict[str, Any]:
    """`{key: value}` for one feature; INVALID_PARAMETER for a key opencbr does not know."""
    known = features(settings, region)
    if key not in known:
        raise CbrError(INVALID_PARAMETER, f"The feature key {key[:64]!r} is not supported.")
    return {key: known[key]}
