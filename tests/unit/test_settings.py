"""Configuration: TOML file, OPENCBR_* overrides, defaults and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

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


EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "opencbr.example.toml"


def test_the_readme_example_configuration_loads_with_a_root_in_every_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OPENCBR_CONFIG", "OPENCBR_PASSWORD_HASH_COST", "OPENCBR_REGIONS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(EXAMPLE)
    assert [r.name for r in settings.regions] == ["region1", "region2"]
    assert settings.replication_destinations("region1") == ["region2"]
    assert settings.base_url == "https://backup.example.com"
    # The first projects are named after their regions: each region can be restored into.
    rooted = {root.project for root in settings.protectable_roots}
    assert rooted == {region.name for region in settings.regions}


def test_lists_and_nested_keys_come_from_the_environment_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `OPENCBR_*` syntax: a list (or a table) is one JSON value."""
    monkeypatch.delenv("OPENCBR_CONFIG", raising=False)
    monkeypatch.setenv("OPENCBR_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv(
        "OPENCBR_REGIONS",
        '[{"name": "eu", "storage": "/srv/eu", "replication_destinations": ["us"]},'
        ' {"name": "us", "storage": "/srv/us"}]',
    )
    monkeypatch.setenv("OPENCBR_PROTECTABLE_ROOTS", '[{"project": "eu", "path": "/srv/data"}]')
    monkeypatch.setenv("OPENCBR_EMBEDDED_WORKER", "false")
    monkeypatch.setenv("OPENCBR_METRICS_LISTEN", "")
    settings = load_settings()
    assert [(r.name, r.storage) for r in settings.regions] == [("eu", "/srv/eu"), ("us", "/srv/us")]
    assert settings.replication_destinations("eu") == ["us"]
    assert [(r.project, r.path) for r in settings.protectable_roots] == [("eu", Path("/srv/data"))]
    assert (settings.embedded_worker, settings.metrics_listen) == (False, "")
    monkeypatch.setenv("OPENCBR_REGIONS", "eu,us")  # not JSON: refused, never half-read
    with pytest.raises(SettingsError, match="regions"):  # serve: one `error:` line
        load_settings()


def test_an_s3_region_keeps_its_secret_out_of_reprs_and_dumps(tmp_path: Path) -> None:
    from opencbr.services.stores import store_options

    region = {
        "name": "r",
        "storage": "s3://bucket/prefix",
        "s3_endpoint": "http://127.0.0.1:8333",
        "s3_region": "us-east-1",
        "s3_access_key_id": "AK",
        "s3_secret_access_key": "sekrit-3a9f",
    }
    settings = load_settings(None, data_dir=tmp_path, regions=[region])
    assert "sekrit-3a9f" not in repr(settings) and "sekrit-3a9f" not in str(settings.model_dump())
    options = store_options(settings.regions[0]).s3
    assert (options.endpoint, options.region, options.access_key_id) == (
        "http://127.0.0.1:8333",
        "us-east-1",
        "AK",
    )
    assert options.secret_access_key == "sekrit-3a9f"
    assert "sekrit-3a9f" not in repr(options)


def test_an_s3_endpoint_must_be_an_http_url(tmp_path: Path) -> None:
    region = {"name": "r", "storage": "s3://bucket/p", "s3_endpoint": "127.0.0.1:8333"}
    with pytest.raises(ValidationError, match="s3_endpoint must be an http"):
        load_settings(None, data_dir=tmp_path, regions=[region])


def test_queue_and_secret_key_default_to_files_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENCBR_CONFIG", raising=False)
    settings = load_settings()
    assert settings.queue == f"sqlite:///{tmp_path / '.opencbr' / 'queue.db'}"
    assert settings.key_file == tmp_path / ".opencbr" / "secret.key"
    shared = load_settings(
        queue_url="redis://:pw@cache:6379/0", secret_key_file=Path("keys/secret.key")
    )
    assert shared.queue == "redis://:pw@cache:6379/0"
    assert shared.key_file == tmp_path / "keys" / "secret.key"  # resolved once, at load


def test_an_unknown_queue_is_refused_without_quoting_the_url() -> None:
    with pytest.raises(ValidationError) as refused:
        load_settings(queue_url="amqp://guest:hunter2@rabbit/")
    (error,) = refused.value.errors()
    assert error["loc"] == ("queue_url",) and "hunter2" not in error["msg"]


@pytest.mark.parametrize(
    ("url", "storage"),
    [
        ("sqlite:///QUEUE", "_WakingSqliteStorage"),
        ("redis://127.0.0.1:6379/13", "_RedisQueueStorage"),
    ],
)
def test_the_queue_url_picks_the_storage(tmp_path: Path, url: str, storage: str) -> None:
    from opencbr.jobs.queue import open_huey

    huey = open_huey(url.replace("QUEUE", str(tmp_path / "queue.db")))
    assert type(huey.storage).__name__ == storage  # Redis connects lazily: no server needed


def test_postgresql_urls_are_given_to_libpq_without_the_driver_name() -> None:
    from opencbr.jobs.queue import libpq_url

    assert libpq_url("postgresql+psycopg://u:p@h:5432/db") == "postgresql://u:p@h:5432/db"
    assert libpq_url("postgres://u@h/db") == "postgresql://u@h/db"


def test_typos_inside_regions_and_roots_are_refused_not_ignored(tmp_path: Path) -> None:
    """A misspelt key inside a table (`replication_window`) once started the service
    without the windows it meant: copies ran at any time. Refused like a top-level one."""
    region = {"name": "r1", "storage": str(tmp_path / "s"), "replication_window": ["1:00-2:00"]}
    with pytest.raises(ValidationError, match="replication_window"):
        load_settings(data_dir=tmp_path, regions=[region])
    root = {"project": "r1", "path": str(tmp_path), "readonly": True}
    with pytest.raises(ValidationError, match="readonly"):
        load_settings(data_dir=tmp_path, protectable_roots=[root])


def test_replication_destinations_must_name_configured_regions(tmp_path: Path) -> None:
    regions = [
        {"name": "eu", "storage": str(tmp_path / "eu"), "replication_destinations": ["su"]},
        {"name": "us", "storage": str(tmp_path / "us")},
    ]
    with pytest.raises(ValidationError, match=r"replication_destinations names no .*: su"):
        load_settings(data_dir=tmp_path, regions=regions)
    regions[0]["replication_destinations"] = ["us"]
    assert load_settings(data_dir=tmp_path, regions=regions).replication_destinations("eu") == [
        "us"
    ]


@pytest.mark.parametrize("listen", ["127.0.0.1:99999", "127.0.0.1:65536"])
def test_a_port_beyond_65535_is_refused(tmp_path: Path, listen: str) -> None:
    """It once wrapped around (99999 listened on 34463)."""
    with pytest.raises(ValidationError, match="not a TCP port"):
        load_settings(data_dir=tmp_path, listen=listen)
    with pytest.raises(ValidationError, match="not a TCP port"):
        load_settings(data_dir=tmp_path, metrics_listen=listen)


def test_database_urls_are_sqlite_or_postgresql_through_psycopg(tmp_path: Path) -> None:
    """`postgresql://` and `postgres://` mean psycopg 3 (the driver installed); any other
    scheme is one clear error that never quotes the URL (a password), not an 80-line
    traceback from a driver import."""
    for url in ("postgresql://u:pw@db/opencbr", "postgres://u:pw@db/opencbr"):
        settings = load_settings(data_dir=tmp_path, database_url=url)
        assert settings.db_url == "postgresql+psycopg://u:pw@db/opencbr"
    kept = "postgresql+psycopg://u:pw@db/opencbr"
    assert load_settings(data_dir=tmp_path, database_url=kept).db_url == kept
    with pytest.raises(ValidationError, match="database_url must be") as refused:
        load_settings(data_dir=tmp_path, database_url="mysql://u:secretpw@db/x")
    assert all("secretpw" not in error["msg"] for error in refused.value.errors())
