"""Master-key rotation with real processes: `opencbr admin key rotate` runs while a backup
is being written (a slow store keeps it busy); the backup completes; the server restarted
with the new master key restores it byte for byte; with the old key it refuses to start in
one line. A new data key for a project seals new chunks while older ones stay readable."""

from __future__ import annotations

import base64
import os
import random
import subprocess
from pathlib import Path

import pytest

from opencbr.storage.chunk import sealed_key_id
from tests.e2e.flows import OPENCBR, Client, Server, free_port, write_config

pytestmark = pytest.mark.slow  # real processes

MiB = 1 << 20


def _new_key_file(path: Path) -> Path:
    path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    path.chmod(0o600)
    return path


def _chunk_key_ids(store: Path) -> set[int | None]:
    chunks = (p for p in store.rglob("chunks/*/*") if p.is_file())
    return {sealed_key_id(p.read_bytes(), p.name) for p in chunks}


def test_rotating_the_master_key_during_a_backup_then_restarting_with_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    extra = (
        "io_threads = 1\nmax_chunks_in_flight = 2\n"
        f'[[regions]]\nname = "region1"\nstorage = "faulty+file://{store}/region1?delay=0.4"\n'
        f'[[regions]]\nname = "region2"\nstorage = "{store}/region2"\n'
    )
    port = free_port()
    config = write_config(tmp_path, port, extra)
    server = Server(config, tmp_path / "data", port)
    server.start()
    try:
        project = server.projects()["region1"]
        client = Client(server, project)
        source = server.root("region1") / "tree"
        source.mkdir()
        rng = random.Random(7)
        for index in range(6):
            (source / f"f{index}.bin").write_bytes(rng.randbytes(MiB))
        resource = client.register_dir("tree", str(source))
        vault = client.vault("v", resources=[resource])
        checkpoint = client.start_backup(vault, "during-rotation")
        new_key = _new_key_file(tmp_path / "new-master.key")
        rotated = server.admin("key", "rotate", "--new-master-key-file", str(new_key))
        running = client.call("GET", f"/checkpoints/{checkpoint}")["checkpoint"]["status"]
        assert running == "protecting"  # the rotation ran while the backup was written
        backup = client.finished_backup(checkpoint)
        assert rotated["rotated"]["keys"] >= 2  # the naming secret and the project's key
        assert backup["status"] == "available", backup
        assert backup["extend_info"]["encrypted"] is True
        client.http.close()
    finally:
        server.stop()

    old_key = tmp_path / "data" / "master.key"
    refused = subprocess.run(
        [*OPENCBR, "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1] == (
        f"error: the master key file {old_key} does not unwrap this database's data keys: "
        "give every process the master key they were wrapped with"
    )

    restarted = Server(
        config, tmp_path / "data", port, env={"OPENCBR_MASTER_KEY_FILE": str(new_key)}
    )
    restarted.start()
    try:
        client = Client(restarted, project)
        (server.root("region1") / "back").mkdir()
        (server.root("region1") / "back2").mkdir()
        target = client.register_dir("back", str(server.root("region1") / "back"))
        log = client.restore(backup["id"], target)
        assert log["status"] == "success", log
        for index in range(6):
            name = f"f{index}.bin"
            assert (server.root("region1") / "back" / name).read_bytes() == (
                source / name
            ).read_bytes()

        before = _chunk_key_ids(store / "region1")
        restarted.admin("key", "rotate", "--project", project, "--data-key")
        (source / "later.bin").write_bytes(rng.randbytes(MiB))
        # A running process picks the new key up within CURRENT_KEY_SECONDS; a restart
        # at once.
        client.http.close()
        restarted.stop()
        restarted.start()
        client = Client(restarted, project)
        later = client.finished_backup(client.start_backup(vault, "after-new-data-key"))
        assert later["status"] == "available", later
        assert len(_chunk_key_ids(store / "region1") - before) == 1
        target = client.register_dir("back2", str(server.root("region1") / "back2"))
        log = client.restore(later["id"], target)  # old and new chunks alike
        assert log["status"] == "success", log
        client.http.close()
    finally:
        restarted.stop()
