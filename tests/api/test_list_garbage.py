"""Listing backups leaves no reference cycles per listed backup: what a request allocates
is freed by reference counting as it ends, so the cyclic garbage collector's full
collections (which hold the GIL, hence stall every other request) stay rare and short."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.api.helpers import Env, create_vault, register_dir

RESOURCES = 12


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Only our explicit collections run: each finds what the requests before it left."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _orm_garbage_of_list(env: Env, vault_id: str, limit: int) -> list[str]:
    """The types of the SQLAlchemy objects that listing `limit` backups left in reference
    cycles (the idle worker threads leave cycles of their own meanwhile: not counted)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collection finds stays in gc.garbage
    response = env.get("region1", "/backups", params={"vault_id": vault_id, "limit": limit})
    assert response.status_code == 200, response.text
    assert len(response.json()["backups"]) == limit
    gc.collect()
    gc.set_debug(0)
    found = [type(obj).__qualname__ for obj in gc.garbage if _orm(obj)]
    gc.garbage.clear()
    return found


def _orm(obj: object) -> bool:
    return type(obj).__module__.startswith("sqlalchemy.orm")


def test_listed_backups_leave_no_cyclic_garbage(env: Env, collector_off: None) -> None:
    resources = []
    for index in range(RESOURCES):
        resource = register_dir(env, name=f"data{index}")
        (env.roots["region1"] / f"data{index}" / "file.txt").write_text(f"file {index}\n")
        resources.append({"id": resource["id"], "type": "OS::Sfs::Turbo"})
    vault = create_vault(env, resources=resources)
    checkpoint = env.post(
        "region1", "/checkpoints", {"checkpoint": {"vault_id": vault["id"], "parameters": {}}}
    ).json()["checkpoint"]
    env.wait_for(
        "region1",
        f"/checkpoints/{checkpoint['id']}",
        lambda body: body["checkpoint"]["status"] != "protecting",
    )
    for _ in range(3):  # warm: caches filled by the first requests are not garbage
        _orm_garbage_of_list(env, vault["id"], RESOURCES)

    # Reading a backup's state through `inspect(row).attrs` left ~40 objects in cycles per
    # listed backup: its InstanceState, and an AttributeState per column.
    assert _orm_garbage_of_list(env, vault["id"], RESOURCES) == []
