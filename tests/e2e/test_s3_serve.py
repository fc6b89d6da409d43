"""`opencbr serve` with regions in S3 (SeaweedFS): a region whose credentials are wrong is one
error line at start-up, never showing the secret; a region whose are right backs up and
restores, its settings given in the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.flows import Client, Server, free_port, write_config
from tests.s3servers import ACCESS_KEY, SECRET_KEY, S3Server

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def s3_region(name: str, s3: S3Server, secret: str) -> str:
    return (
        f'[[regions]]\nname = "{name}"\nstorage = "{s3.fresh_url()}"\n'
        f's3_endpoint = "{s3.endpoint}"\ns3_region = "us-east-1"\n'
        f's3_access_key_id = "{ACCESS_KEY}"\ns3_secret_access_key = "{secret}"\n'
    )


def test_wrong_s3_credentials_are_one_line_at_start_and_the_good_region_works(
    tmp_path: Path, seaweedfs: S3Server
) -> None:
    wrong = "wrong-secret-5d0b"
    regions = s3_region("region1", seaweedfs, wrong) + s3_region("region2", seaweedfs, SECRET_KEY)
    port = free_port()
    instance = Server(write_config(tmp_path, port, regions), tmp_path / "data", port)
    instance.start()
    try:
        errors = [line for line in instance.log().splitlines() if "level=error" in line]
        assert len(errors) == 1, errors
        assert 'event="region storage unusable" region=region1' in errors[0]
        assert (
            "reason=\"S3 access denied (check the region's s3_access_key_id and"
            f' s3_secret_access_key) at {seaweedfs.endpoint}"'
        ) in errors[0]

        client = Client(instance, instance.projects()["region2"])
        with client.http:
            data = instance.root("region2") / "data"
            data.mkdir()
            (data / "file").write_bytes(b"kept in S3 " * 50_000)
            resource = client.register_dir("data", str(data))
            vault = client.vault("v", resources=[resource])
            backup = client.finished_backup(client.start_backup(vault, "first"))
            assert backup["status"] == "available"
            target = instance.root("region2") / "target"
            target.mkdir()
            log = client.restore(backup["id"], client.register_dir("target", str(target)))
            assert log["status"] == "success", log
            assert (target / "file").read_bytes() == (data / "file").read_bytes()
            answers = client.http.get(f"/vaults/{vault}").text + client.http.get("/backups").text
    finally:
        instance.stop()
    log_text = instance.log()
    assert "Traceback" not in log_text
    for text in (log_text, answers):
        assert wrong not in text and SECRET_KEY not in text
