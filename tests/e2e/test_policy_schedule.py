"""Policies in real time against a real `opencbr serve`: a backup policy whose slot is the
next minute backs the vault up within 3 s of the slot, by itself; a replication policy
then copies that backup with `auto_trigger`; with `max_backups: 2`, four `/run`s of each
leave two automatic backups and their two replicas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.flows import Client, Server

pytestmark = pytest.mark.slow

# The housekeeping loop sleeps until the next slot (not the next 10 s tick): the backup
# began 0.15 s after the slot here, 1.5-7.2 s when only the tick found it.
ON_TIME_SECONDS = 3


def next_free_minute(now: datetime) -> datetime:
    """The next whole minute at least 5 s away: room to create and bind the policy (well
    under a second here; a slot that passes first is still run, being inside the policy's
    start window)."""
    slot = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return slot if (slot - now).total_seconds() >= 5 else slot + timedelta(minutes=1)


def wire(value: str) -> datetime:
    return datetime.fromisoformat(value.rstrip("Z")).replace(tzinfo=UTC)


def policy_body(operation_type: str, pattern: str, **definition: Any) -> dict[str, Any]:
    return {
        "policy": {
            "name": f"{operation_type}-every-day",
            "operation_type": operation_type,
            "operation_definition": definition,
            "trigger": {"properties": {"pattern": [pattern]}},
        }
    }


def test_slot_backs_up_by_itself_then_replication_policy_copies(server: Server) -> None:
    projects = server.projects()
    one, two = Client(server, projects["region1"]), Client(server, projects["region2"])
    try:
        back_up_on_schedule_then_replicate(server, projects, one, two)
    finally:
        one.http.close()
        two.http.close()


def back_up_on_schedule_then_replicate(
    server: Server, projects: dict[str, str], one: Client, two: Client
) -> None:
    data = server.root("region1") / "docs"
    data.mkdir()
    (data / "report.txt").write_text("scheduled\n" * 1000)
    vault_id = one.vault("scheduled", resources=[one.register_dir("docs", str(data))])
    slot = next_free_minute(datetime.now(UTC))
    pattern = f"FREQ=DAILY;INTERVAL=1;BYHOUR={slot.hour};BYMINUTE={slot.minute}"
    policy = one.call("POST", "/policies", policy_body("backup", pattern, max_backups=5))
    one.call("POST", f"/vaults/{vault_id}/associatepolicy", {"policy_id": policy["policy"]["id"]})

    timeout = (slot - datetime.now(UTC)).total_seconds() + 90
    body = one.wait(
        "/backups",
        lambda b: any(x["status"] == "available" for x in b["backups"]),
        timeout=timeout,
        vault_id=vault_id,
    )
    [backup] = body["backups"]
    assert backup["extend_info"]["auto_trigger"] is True
    started = wire(backup["created_at"])
    assert slot <= started < slot + timedelta(seconds=ON_TIME_SECONDS), (slot, started)

    replica_vault = two.vault("replicas", protect_type="replication")
    replicating = one.call(
        "POST",
        "/policies",
        policy_body(
            "replication",
            pattern,
            destination_region="region2",
            destination_project_id=projects["region2"],
        ),
    )["policy"]
    one.call(
        "POST",
        f"/vaults/{vault_id}/associatepolicy",
        {"policy_id": replicating["id"], "destination_vault_id": replica_vault},
    )
    run = one.call("POST", f"/policies/{replicating['id']}/run")["policy_run"]
    assert len(run["replication_record_ids"]) == 1

    replicas = two.wait(
        "/backups",
        lambda b: any(x["status"] == "available" for x in b["backups"]),
        vault_id=replica_vault,
    )["backups"]
    assert [r["extend_info"]["auto_trigger"] for r in replicas] == [True]
    records = one.call("GET", "/backups", vault_id=vault_id, show_replication="true")
    [record] = records["backups"][0]["replication_records"]
    assert record["extra_info"]["auto_trigger"] is True and record["status"] == "success"
    # Nothing new to copy: a second run starts nothing and logs no error.
    again = one.call("POST", f"/policies/{replicating['id']}/run")["policy_run"]
    assert again["replication_record_ids"] == []
    four_runs_keep_two(one, two, vault_id, replica_vault, policy["policy"]["id"], replicating["id"])


def four_runs_keep_two(
    one: Client, two: Client, vault_id: str, replica_vault: str, backing_up: str, replicating: str
) -> None:
    """With `max_backups: 2` on both policies, `/run` of each four times leaves the two
    newest automatic backups and their two replicas; the rest go through the delete path."""
    for policy_id in (backing_up, replicating):
        change = {"policy": {"operation_definition": {"max_backups": 2}}}
        one.call("PUT", f"/policies/{policy_id}", change)
    made = []
    for _ in range(4):
        run = one.call("POST", f"/policies/{backing_up}/run")["policy_run"]
        [checkpoint_id] = run["checkpoint_ids"]
        made.append(one.finished_backup(checkpoint_id)["id"])
        [record_id] = one.call("POST", f"/policies/{replicating}/run")["policy_run"][
            "replication_record_ids"
        ]
        one.wait(
            "/backups",
            lambda b, r=record_id: any(
                x["id"] == r and x["status"] == "success"
                for backup in b["backups"]
                for x in backup["replication_records"]
            ),
            vault_id=vault_id,
            show_replication="true",
        )

    sources = one.wait("/backups", lambda b: len(b["backups"]) == 2, vault_id=vault_id)
    assert sorted(b["id"] for b in sources["backups"]) == sorted(made[-2:])
    assert all(b["extend_info"]["auto_trigger"] for b in sources["backups"])
    replicas = two.wait("/backups", lambda b: len(b["backups"]) == 2, vault_id=replica_vault)
    assert sorted(r["source_backup_id"] for r in replicas["backups"]) == sorted(made[-2:])
    assert all(r["extend_info"]["auto_trigger"] for r in replicas["backups"])
    for client, policy_id in ((one, backing_up), (two, replicating)):
        logs = client.call("GET", "/operation-logs", operation_type="delete")["operation_logs"]
        assert [log["policy_id"] for log in logs] == [policy_id] * 3, logs
