"""The client's credentials from clouds.yaml (and secure.yaml) files and OS_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencbr.client.config import ConfigError, load

PASSWORD_ENV = {
    "OS_AUTH_URL": "http://backup.example:8080/identity/v3",
    "OS_USERNAME": "alice",
    "OS_PASSWORD": "s3cret-pass",
    "OS_PROJECT_NAME": "team-a",
}


def write_clouds(directory: Path, text: str, name: str = "clouds.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_the_environment_gives_a_password_login() -> None:
    credentials = load(None, {**PASSWORD_ENV, "OS_USER_DOMAIN_NAME": "Corp"})
    assert (credentials.username, credentials.password) == ("alice", "s3cret-pass")
    assert (credentials.project_name, credentials.project_id) == ("team-a", None)
    assert credentials.user_domain_name == "Corp"
    assert credentials.project_domain_name == "Default"
    assert not credentials.signs
    assert credentials.service_url == "http://backup.example:8080"
    assert credentials.identity_url == "http://backup.example:8080/identity/v3"
    assert "s3cret-pass" not in repr(credentials)


def test_an_access_key_in_the_environment_signs_and_needs_no_password() -> None:
    env = {
        "OS_AUTH_URL": "https://backup.example",
        "OS_ACCESS_KEY": "AK1",
        "OS_SECRET_KEY": "SK-very-secret",
        "OS_PROJECT_ID": "p1",
    }
    credentials = load(None, env)
    assert credentials.signs and credentials.project_id == "p1"
    assert credentials.service_url == "https://backup.example"
    assert credentials.identity_url == "https://backup.example/identity/v3"
    assert "SK-very-secret" not in repr(credentials)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no auth URL"),
        ({**PASSWORD_ENV, "OS_AUTH_URL": "backup.example"}, "must start with http"),
        ({k: v for k, v in PASSWORD_ENV.items() if k != "OS_PROJECT_NAME"}, "no project"),
        ({k: v for k, v in PASSWORD_ENV.items() if k != "OS_PASSWORD"}, "no credentials"),
        ({**PASSWORD_ENV, "OS_ACCESS_KEY": "AK1"}, "needs its secret key"),
    ],
)
def test_what_is_missing_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, env)


def test_a_cloud_of_clouds_yaml_with_its_password_in_secure_yaml(tmp_path: Path) -> None:
    home = tmp_path / "home"
    places = home / ".config" / "openstack"
    write_clouds(
        places,
        "clouds:\n"
        "  lab:\n"
        "    auth:\n"
        "      auth_url: http://lab:8080/identity/v3\n"
        "      username: bob\n"
        "      project_id: p9\n"
        "      user_domain_name: Lab\n"
        "  other: {auth: {auth_url: 'http://x'}}\n",
    )
    write_clouds(places, "clouds:\n  lab:\n    auth:\n      password: pw\n", "secure.yaml")
    credentials = load("lab", {"HOME": str(home)})
    assert (credentials.username, credentials.password, credentials.project_id) == (
        "bob",
        "pw",
        "p9",
    )
    assert credentials.user_domain_name == "Lab"
    assert credentials.source == f"cloud 'lab' in {places / 'clouds.yaml'}"


def test_os_cloud_and_os_client_config_file_name_the_cloud_and_the_file(tmp_path: Path) -> None:
    path = write_clouds(
        tmp_path / "elsewhere",
        "clouds:\n  otc:\n    auth: {auth_url: 'http://otc', project_name: eu-de}\n"
        "    ak: AK2\n    sk: SK2\n",
        "my-clouds.yml",
    )
    credentials = load(None, {"OS_CLOUD": "otc", "OS_CLIENT_CONFIG_FILE": str(path)})
    assert credentials.signs and credentials.access_key == "AK2"
    assert credentials.project_name == "eu-de"


def test_an_unknown_cloud_or_a_broken_file_is_refused_without_its_contents(
    tmp_path: Path,
) -> None:
    path = write_clouds(tmp_path, "clouds:\n  lab: {auth: {auth_url: 'http://lab'}}\n")
    env = {"OS_CLIENT_CONFIG_FILE": str(path)}
    with pytest.raises(ConfigError, match=r"cloud 'nope' is not in .*\(clouds there: lab\)"):
        load("nope", env)
    path.write_text("clouds:\n  lab: {auth: {password: 'leaky\n")
    with pytest.raises(ConfigError, match="is not valid YAML") as refused:
        load("lab", env)
    assert "leaky" not in str(refused.value)
    with pytest.raises(ConfigError, match="not a file"):
        load("lab", {"OS_CLIENT_CONFIG_FILE": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match=r"no clouds\.yaml found"):
        load("lab", {"HOME": str(tmp_path / "empty-home")})


def test_the_secure_yaml_beside_os_client_config_file_is_merged(tmp_path: Path) -> None:
    """README: "a secure.yaml beside it is merged in" holds for a clouds file named by
    OS_CLIENT_CONFIG_FILE too, not only for one found in the usual places."""
    clouds = write_clouds(
        tmp_path / "other",
        "clouds:\n  lab:\n    auth: {auth_url: 'http://lab', username: bob, project_id: p1}\n",
        "c.yaml",
    )
    write_clouds(tmp_path / "other", "clouds:\n  lab:\n    auth: {password: pw}\n", "secure.yaml")
    home = tmp_path / "home"  # no secure.yaml in the usual places
    credentials = load("lab", {"HOME": str(home), "OS_CLIENT_CONFIG_FILE": str(clouds)})
    assert (credentials.username, credentials.password) == ("bob", "pw")
