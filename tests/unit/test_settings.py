"""Configuration: TOML file, OPENCBR_* overrides, defaults and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from opencbr.settings import load_settings


def test_defaults_give_two_regions_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENCBR_CONFIG", raising=False)
    settings = load_settings()
    assert settings.data_dir == tmp_path / ".opencbr"
    assert [r.name for r in settings.regions] == ["region1", "region2"]
    assert settings.regions[0].storage == str(tmp_path / ".opencbr" / "store" / "region1")
    assert settings.db_url == f"sqlite:///{tmp_path / '.opencbr' / 'opencbr.db'}"
    assert settings.replication_destinations("region1") == ["region2"]
    roots = {root.project: root.path for root in settings.protectable_roots}
    assert roots == {r: tmp_path / ".opencbr" / "resources" / r for r in ("region1", "region2")}


def test_toml_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "opencbr.toml"
    config.write_text(
        f'data_dir = "{tmp_path}/d"\nlisten = "0.0.0.0:9000"\ntoken_ttl_seconds = 60\n'
        '[[regions]]\nname = "eu"\nstorage = "/srv/eu"\nreplication_destinations = []\n'
        '[[regions]]\nname = "us"\nstorage = "/srv/us"\n'
        '[[protectable_roots]]\nproject = "eu"\npath = "/srv/data"\n'
    )
    monkeypatch.setenv("OPENCBR_TOKEN_TTL_SECONDS", "120")
    settings = load_settings(config)
    assert (settings.host, settings.port, settings.token_ttl_seconds) == ("0.0.0.0", 9000, 120)
    assert settings.replication_destinations("eu") == []
    assert settings.replication_destinations("us") == ["eu"]
    assert settings.protectable_roots[0].path == Path("/srv/data")


def test_invalid_configuration_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('listen = "nope"\n')
    with pytest.raises(ValidationError):
        load_settings(config)
    config.write_text(
        '[[regions]]\nname = "a"\nstorage = "/x"\n[[regions]]\nname = "a"\nstorage = "/y"\n'
    )
    with pytest.raises(ValidationError):
        load_settings(config)
    config.write_text("unknown_key = 1\n")
    with pytest.raises(ValidationError):
        load_settings(config)


def test_log_format_and_level_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "log.toml"
    config.write_text('log_format = "json"\nlog_level = "WARNING"\n')
    settings = load_settings(config)
    assert (settings.log_format, settings.log_level) == ("json", "warning")
    assert load_settings(tmp_path / "log.toml", log_format="plain").log_format == "plain"
    for bad in ('log_format = "xml"\n', 'log_format = "JSON"\n', 'log_level = "loud"\n'):
        config.write_text(bad)
        with pytest.raises(ValidationError):
            load_settings(config)


def test_password_hash_cost_defaults_to_production_and_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENCBR_PASSWORD_HASH_COST", raising=False)
    config = tmp_path / "hash.toml"
    config.write_text("")
    assert load_settings(config).password_hash_cost == "production"
    config.write_text('password_hash_cost = "test"\n')
    assert load_settings(config).password_hash_cost == "test"
    for bad in ('password_hash_cost = "cheap"\n', 'password_hash_cost = "Test"\n'):
        config.write_text(bad)
        with pytest.raises(ValidationError):
            load_settings(config)
