"""The README's curl walkthrough (docs/walkthrough.sh), run unchanged against a real
`opencbr serve` on the built-in defaults: no configuration file, the data directory
`./.opencbr` of its working directory, the default resources roots."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.flows import Server, free_port, token_for

pytestmark = pytest.mark.slow  # real `opencbr` processes: seconds a test

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "walkthrough.sh"


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    # Only what a shared test machine needs: free ports, and the cheap password hash.
    env = {
        "OPENCBR_LISTEN": f"127.0.0.1:{port}",
        "OPENCBR_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "OPENCBR_PASSWORD_HASH_COST": "test",
    }
    server = Server(None, tmp_path / ".opencbr", port, env=env, cwd=tmp_path)
    server.start()
    try:
        # README order: the command-line walkthrough has registered its `projects` already.
        projects = tmp_path / ".opencbr" / "resources" / "region1" / "projects"
        projects.mkdir(parents=True)
        project = server.projects()["region1"]
        registered = httpx.post(
            f"{server.url}/v3/{project}/protectables/turbo/instances",
            json={"instance": {"name": "projects", "path": str(projects)}},
            headers={"X-Auth-Token": token_for(server, project)},
            timeout=30,
        )
        assert registered.status_code == 200, registered.text
        done = subprocess.run(
            ["bash", str(SCRIPT)],
            cwd=tmp_path,
            env={**os.environ, "CBR_URL": server.url},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.stop()
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{server.log()[-4000:]}"
    out = done.stdout
    assert "restored tree is identical" in out
    assert "replica restored identically in region2" in out
    assert out.count("replicated: success") == 3
    assert out.rstrip().endswith("done")
    assert "leased work failed" not in server.log()
