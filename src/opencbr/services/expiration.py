"""Changing when a vault's backups expire (`update-backup-expiration-time`).

Only `expired_at` is set here; deleting expired backups is the retention work's. The day
names a date in the caller's time zone: backups expire at its start (00:00 there), kept
in UTC like every other timestamp. Without a day, the backups never expire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select, update

from opencbr import clock
from opencbr.db.backups import Backup
from opencbr.db.session import Database
from opencbr.db.status import KEPT_BACKUP
from opencbr.db.vaults import RESOURCE_TYPES
from opencbr.errors import INVALID_PARAMETER, CbrError
from opencbr.services import operation_logs, vaults
from opencbr.services.identity import AuthContext

OPERATION_TYPE = "update_expiration_time"
_ZONE = re.compile(r"UTC(?:([+-])([0-9]{2}):([0-9]{2}))?")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
MAX_OFFSET = timedelta(hours=14)  # the widest offset in use (UTC+14:00, Kiribati)


@dataclass(frozen=True)
class ExpirationChange:
    affected_backups: int
    day: date | None
    operation_log_id: str


def zone_offset(text: str) -> timedelta:
    """`UTC`, `UTC+08:00`, `UTC-05:30` -> the offset from UTC."""
    match = _ZONE.fullmatch(text)
    if match is None:
        raise CbrError(INVALID_PARAMETER, "time_zone must look like UTC+08:00")
    sign, hours, minutes = match.groups()
    if sign is None:
        return timedelta(0)
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    if int(minutes) >= 60 or offset > MAX_OFFSET:
        raise CbrError(INVALID_PARAMETER, "time_zone must lie between UTC-14:00 and UTC+14:00")
    return offset if sign == "+" else -offset


def expiry(day_text: str, offset: timedelta, now: datetime) -> tuple[date, datetime]:
    """The day and the UTC instant its start is in the caller's zone; the day must be one
    still to come there (an expiry in the past would delete backups at once)."""
    try:
        day = date.fromisoformat(day_text) if _DAY.fullmatch(day_text) else None
    except ValueError:
        day = None
    if day is None:
        raise CbrError(INVALID_PARAMETER, "expect_expiration_date must be a date: YYYY-MM-DD")
    today_there = (now + offset).date()
    if day <= today_there:
        raise CbrError(
            INVALID_PARAMETER,
            f"expect_expiration_date must be after today ({today_there.isoformat()}) "
            "in the time zone given",
        )
    return day, datetime.combine(day, datetime.min.time()) - offset


def update_expiration(
    db: Database,
    ctx: AuthContext,
    vault_id: str,
    day_text: str | None,
    time_zone: str,
    request_id: str,
) -> ExpirationChange:
    """Set the expiry of every kept backup of the vault (volumes with their server) and log
    the change as a finished task; the count is of backups as listed (top level)."""
    offset = zone_offset(time_zone)
    day, expires = expiry(day_text, offset, clock.now()) if day_text is not None else (None, None)
    with db.transaction() as session:
        vault = vaults.get_in_session(session, ctx, vault_id)
        kept = (Backup.vault_id == vault.id, Backup.status.in_(KEPT_BACKUP))
        count = session.scalar(
            select(func.count()).select_from(Backup).where(*kept, Backup.parent_id.is_(None))
        )
        session.execute(
            update(Backup)
            .where(*kept)
            .values(expired_at=expires)
            .execution_options(synchronize_session=False)
        )
        details = {
            "affected_backups_count": count or 0,
            "expiration_day": day.isoformat() if day else None,
        }
        log = operation_logs.open_log(
            session,
            project_id=ctx.project_id,
            operation_type=OPERATION_TYPE,
            subject=operation_logs.Subject(
                vault.id,
                RESOURCE_TYPES[vault.object_type],
                vault.name,
                vault.id,
                vault.name,
                vault.provider_id,
            ),
            details=details,
            request_id=request_id,
        )
        session.flush()
        operation_logs.complete_operation(session, log.id)
        return ExpirationChange(count or 0, day, log.id)
