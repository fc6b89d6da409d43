"""The encryption of stored access-key secrets (services.credentials.SecretBox)."""

from __future__ import annotations

import stat
from pathlib import Path

from opencbr.services.credentials import SecretBox

AK = "HPUAEXAMPLEAK0000001"
SK = "ExampleSecretKey0000000000000000000000001"


def test_first_use_creates_a_private_key_file_that_later_boxes_reuse(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret.key"
    sealed = SecretBox(path).seal(AK, SK)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SecretBox(path).open(AK, sealed) == SK
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary left


def test_sealed_secret_is_not_readable_and_opens_only_for_its_access_key(tmp_path: Path) -> None:
    box = SecretBox(tmp_path / "secret.key")
    sealed = box.seal(AK, SK)
    assert SK not in sealed
    assert box.open("ANOTHERACCESSKEY0001", sealed) is None


def test_another_key_file_cannot_open_the_secret(tmp_path: Path) -> None:
    sealed = SecretBox(tmp_path / "one.key").seal(AK, SK)
    assert SecretBox(tmp_path / "two.key").open(AK, sealed) is None
    assert SecretBox(tmp_path / "one.key").open(AK, sealed[:-4] + "AAAA") is None
