"""Request bodies and small flows shared by the API tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opencbr.storage import layout
from tests.api.conftest import Env


def vault_body(
    name: str = "vault-1",
    object_type: str = "turbo",
    protect_type: str = "backup",
    size: int = 100,
    resources: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "vault": {
            "name": name,
            "billing": {
                "consistent_level": "crash_consistent",
                "object_type": object_type,
                "protect_type": protect_type,
                "size": size,
            },
            "resources": resources or [],
            **extra,
        }
    }


def create_vault(env: Env, region: str = "region1", **kwargs: Any) -> dict[str, Any]:
    response = env.post(region, "/vaults", vault_body(**kwargs))
    assert response.status_code == 200, response.text
    vault: dict[str, Any] = response.json()["vault"]
    return vault


def register_dir(
    env: Env, region: str = "region1", name: str = "data", subdir: str | None = None
) -> dict[str, Any]:
    path = env.roots[region] / (subdir or name)
    path.mkdir(parents=True, exist_ok=True)
    response = env.post(
        region, "/protectables/turbo/instances", {"instance": {"name": name, "path": str(path)}}
    )
    assert response.status_code == 200, response.text
    instance: dict[str, Any] = response.json()["instance"]
    return instance


def register_disk(
    env: Env, region: str = "region1", name: str = "disk", size: int = 1 << 20
) -> dict[str, Any]:
    path: Path = env.roots[region] / f"{name}.img"
    with open(path, "wb") as image:
        image.truncate(size)
    response = env.post(
        region, "/protectables/disk/instances", {"instance": {"name": name, "path": str(path)}}
    )
    assert response.status_code == 200, response.text
    instance: dict[str, Any] = response.json()["instance"]
    return instance


def register_web_server(env: Env, image: bytes) -> dict[str, Any]:
    """A server `web` under region1's root: a directory volume `sys` holding one config
    file and a disk volume `data` whose image holds `image`."""
    root = env.roots["region1"]
    (root / "web" / "sys").mkdir(parents=True)
    (root / "web" / "sys" / "etc.conf").write_text("port=80\n")
    (root / "web" / "data.img").write_bytes(image)
    body = {
        "instance": {
            "name": "web",
            "volumes": [
                {"name": "sys", "path": str(root / "web" / "sys")},
                {"name": "data", "path": str(root / "web" / "data.img")},
            ],
        }
    }
    response = env.post("region1", "/protectables/server/instances", body)
    assert response.status_code == 200, response.text
    server: dict[str, Any] = response.json()["instance"]
    return server


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    assert body["error_msg"]


def chunks_dir(env: Env, region: str, vault_id: str) -> Path:
    """The chunk folder of a vault's local store."""
    region_storage = str(env.settings.data_dir / "store" / region)
    return Path(layout.vault_location(region_storage, vault_id)) / layout.CHUNKS_FOLDER


def chunk_names(env: Env, region: str, vault_id: str) -> set[str]:
    """The digests of the chunk files in a vault's local store."""
    return {p.name for p in chunks_dir(env, region, vault_id).rglob("*") if p.is_file()}
