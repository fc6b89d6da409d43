"""Regions and which of them may replicate where (from configuration)."""

from __future__ import annotations

from dataclasses import dataclass

from opencbr.settings import Settings


@dataclass(frozen=True)
class RegionCapability:
    name: str
    replication_destinations: list[str]


def replication_capabilities(settings: Settings, region: str) -> list[RegionCapability]:
    """The caller's region and the regions it may replicate to."""
    return [RegionCapability(region, settings.replication_destinations(region))]


def can_replicate(settings: Settings, source: str, destination: str) -> bool:
    return destination in settings.replication_destinations(source)
