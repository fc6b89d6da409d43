"""A policy slot starts at its time, not at the housekeeping loop's next tick: after each
tick the loop sleeps until the earliest next slot (or its tick interval, if sooner), and
creating or enabling a policy wakes it to learn the new slot.

The worker's clock is the real one shifted so that a whole minute is two seconds away;
the tick interval is a minute, so a slot found only by the tick would start up to a
minute late.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import event, select

from opencbr import clock
from opencbr.db.backups import Checkpoint
from opencbr.db.policies import PolicyRun
from opencbr.jobs.queue import Jobs
from opencbr.services import policy_runs
from opencbr.services.runtime import Runtime
from opencbr.settings import Settings
from tests.api.helpers import Env, create_vault, make_settings, register_dir
from tests.polling import pauses

SLOT = datetime(2026, 11, 30, 6, 0)
PATTERN = "FREQ=DAILY;INTERVAL=1;BYHOUR=6;BYMINUTE=0"
LEAD_SECONDS = 2.0  # how far ahead of the slot the policy is created or enabled
ON_TIME_SECONDS = 1.5  # how late after its slot a run may start


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, schedule_tick_seconds=60)


@pytest.fixture
def countdown() -> Iterator[Callable[[], None]]:
    """Call it to set the clock LEAD_SECONDS before SLOT, running on at real speed."""

    def start() -> None:
        offset = SLOT - timedelta(seconds=LEAD_SECONDS) - datetime.now(UTC).replace(tzinfo=None)
        clock.set_clock(lambda: datetime.now(UTC) + offset)

    yield start
    clock.reset_clock()


def policy_body(enabled: bool) -> dict[str, Any]:
    return {
        "policy": {
            "name": "at-six",
            "operation_type": "backup",
            "operation_definition": {"max_backups": 5},
            "trigger": {"properties": {"pattern": [PATTERN]}},
            "enabled": enabled,
        }
    }


def bound_vault(env: Env) -> str:
    data = register_dir(env, name="docs")
    (env.roots["region1"] / "docs" / "a.txt").write_text("slot data\n")
    vault: dict[str, Any] = create_vault(
        env, resources=[{"id": data["id"], "type": "OS::Sfs::Turbo"}]
    )
    return str(vault["id"])


def bind(env: Env, vault_id: str, policy_id: str) -> None:
    response = env.post("region1", f"/vaults/{vault_id}/associatepolicy", {"policy_id": policy_id})
    assert response.status_code == 200, response.text


class SlotStart(NamedTuple):
    slot_at: datetime
    claimed_at: datetime  # the run's row: the tick claimed the slot
    began_at: datetime  # the bound vault's checkpoint: the run started its backup


def slot_start(env: Env, policy_id: str) -> SlotStart:
    """When the policy's (only) slot run was claimed and began its vault's checkpoint."""
    for pause in pauses(LEAD_SECONDS + 90, longest=0.05):
        with env.db.reading() as session:
            run = session.execute(
                select(PolicyRun.slot_at, PolicyRun.created_at).where(
                    PolicyRun.policy_id == policy_id, PolicyRun.manual.is_(False)
                )
            ).one_or_none()
            began = session.scalar(
                select(Checkpoint.created_at).where(Checkpoint.policy_id == policy_id)
            )
        if run is not None and began is not None:
            return SlotStart(run.slot_at, run.created_at, began)
        time.sleep(pause)
    raise AssertionError("the slot's run never started")


def assert_on_time(start: SlotStart) -> None:
    assert start.slot_at == SLOT
    claimed_late = (start.claimed_at - SLOT).total_seconds()
    began_late = (start.began_at - SLOT).total_seconds()
    assert 0 <= claimed_late <= began_late < ON_TIME_SECONDS, (claimed_late, began_late)


def policy_due_in_a_moment(env: Env, countdown: Callable[[], None]) -> str:
    """An enabled policy, bound to a vault, created just before its first slot."""
    vault_id = bound_vault(env)
    countdown()
    response = env.post("region1", "/policies", policy_body(enabled=True))
    assert response.status_code == 200, response.text
    policy_id: str = response.json()["policy"]["id"]
    bind(env, vault_id, policy_id)
    return policy_id


def test_a_new_policy_starts_at_its_first_slot_not_at_the_next_tick(
    env: Env, countdown: Callable[[], None]
) -> None:
    policy_id = policy_due_in_a_moment(env, countdown)

    assert_on_time(slot_start(env, policy_id))


def test_enabling_a_policy_wakes_the_scheduler_for_its_next_slot(
    env: Env, countdown: Callable[[], None]
) -> None:
    vault_id = bound_vault(env)
    response = env.post("region1", "/policies", policy_body(enabled=False))
    assert response.status_code == 200, response.text
    policy_id = response.json()["policy"]["id"]
    bind(env, vault_id, policy_id)
    countdown()
    response = env.put("region1", f"/policies/{policy_id}", {"policy": {"enabled": True}})
    assert response.status_code == 200, response.text

    assert_on_time(slot_start(env, policy_id))


# SQLite only: query plans are the backend's own.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_next_slot_is_the_earliest_enabled_one_read_from_the_index(env: Env) -> None:
    rt: Runtime = env.client.app.state.runtime  # type: ignore[attr-defined]
    assert policy_runs.next_slot(rt) is None
    for hour, enabled in ((7, True), (5, False), (6, True)):
        body = policy_body(enabled)
        body["policy"]["trigger"]["properties"]["pattern"] = [
            f"FREQ=DAILY;INTERVAL=1;BYHOUR={hour};BYMINUTE=0"
        ]
        assert env.post("region1", "/policies", body).status_code == 200
    statements: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:
        statements.append((args[2], args[3]))

    event.listen(env.db.engine, "before_cursor_execute", record)
    try:
        found = policy_runs.next_slot(rt)
    finally:
        event.remove(env.db.engine, "before_cursor_execute", record)

    assert found is not None and (found.hour, found.minute) == (6, 0)
    [(statement, parameters)] = [s for s in statements if s[0].startswith("SELECT")]
    with env.db.engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    plan = " | ".join(row[3] for row in rows)
    assert "USING INDEX ix_policies_next_run" in plan and "TEMP B-TREE" not in plan, plan


def test_workers_waking_for_the_same_slot_claim_it_once(
    env: Env, countdown: Callable[[], None]
) -> None:
    """Two more worker processes' loops on the same database (here: threads of this one,
    sharing its moved clock) learn the slot at their first tick and wake at it together
    with the app's: they race for the slot (several conditional UPDATEs) and one run
    starts, on time."""
    policy_id = policy_due_in_a_moment(env, countdown)
    claims: list[str] = []

    def record(*args: Any) -> None:
        if args[2].startswith("UPDATE policies SET next_run_at"):
            claims.append(args[2])

    others = [Jobs(Runtime(env.db, env.settings)) for _ in range(2)]
    event.listen(env.db.engine, "before_cursor_execute", record)
    try:
        for jobs in others:
            jobs.start(workers=1)
        assert_on_time(slot_start(env, policy_id))
        time.sleep(0.5)  # every loop has ticked at the slot by now
    finally:
        event.remove(env.db.engine, "before_cursor_execute", record)
        for jobs in others:
            jobs.stop()
            jobs.close()
            jobs.runtime.close()

    assert len(claims) >= 2  # the loops did race (3 of 3 in every run here)
    with env.db.reading() as session:
        runs = session.scalars(select(PolicyRun.slot_at).where(PolicyRun.policy_id == policy_id))
        assert list(runs) == [SLOT]
