"""Where the client's credentials come from, the OpenStack way: a cloud of `clouds.yaml`
(`--os-cloud NAME` or `OS_CLOUD`), else the `OS_*` environment variables.

`clouds.yaml` is looked for where openstacksdk looks: `OS_CLIENT_CONFIG_FILE`, then
`./clouds.yaml`, `~/.config/openstack/clouds.yaml` and `/etc/openstack/clouds.yaml`
(`.yml` too); a `secure.yaml` beside it (or `OS_CLIENT_SECURE_FILE`) is merged in, so
passwords can live in a file of their own. A cloud names a password login (`auth:
auth_url, username, password, project_id | project_name, user_domain_name,
project_domain_name`) or an access key (`ak`/`sk` or `access_key`/`secret_key`, beside
`auth` or in it, as otcextensions reads them). The environment offers the same:
`OS_AUTH_URL`, `OS_USERNAME`, `OS_PASSWORD`, `OS_PROJECT_ID` / `OS_PROJECT_NAME`,
`OS_USER_DOMAIN_NAME`, `OS_PROJECT_DOMAIN_NAME`, or `OS_ACCESS_KEY` + `OS_SECRET_KEY`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_DOMAIN = "Default"
_NAMES = ("clouds.yaml", "clouds.yml")
_SECURE_NAMES = ("secure.yaml", "secure.yml")


class ConfigError(Exception):
    """The credentials cannot be put together; the message says what is missing."""


@dataclass(frozen=True)
class Credentials:
    """Whom the client acts as, and where. Secrets are never shown (`repr` hides them)."""

    auth_url: str
    project_id: str | None = None
    project_name: str | None = None
    project_domain_name: str = DEFAULT_DOMAIN
    username: str | None = None
    password: str | None = None
    user_domain_name: str = DEFAULT_DOMAIN
    access_key: str | None = None
    secret_key: str | None = None
    source: str = "environment"  # for error messages: "cloud NAME in FILE" or "environment"

    def __repr__(self) -> str:
        return (
            f"Credentials(auth_url={self.auth_url!r}, project_id={self.project_id!r}, "
            f"project_name={self.project_name!r}, username={self.username!r}, "
            f"access_key={self.access_key!r}, source={self.source!r})"
        )

    @property
    def signs(self) -> bool:
        """An access key signs each request (no token)."""
        return bool(self.access_key and self.secret_key)

    @property
    def service_url(self) -> str:
        """The server's root URL: the identity URL without `/identity/v3` (or `/v3`)."""
        url = self.auth_url.rstrip("/")
        for suffix in ("/identity/v3", "/v3", "/identity"):
            if url.endswith(suffix):
                return url[: -len(suffix)]
        return url

    @property
    def identity_url(self) -> str:
        """The Keystone v3 URL (`OS_AUTH_URL` may name the server's root only)."""
        url = self.auth_url.rstrip("/")
        return url if url.endswith("/v3") else f"{self.service_url}/identity/v3"


def load(cloud: str | None, environ: Mapping[str, str] | None = None) -> Credentials:
    """The credentials of `cloud` (else `OS_CLOUD`) from clouds.yaml, else of the
    environment. Raises ConfigError saying what is missing."""
    env = os.environ if environ is None else environ
    name = cloud or env.get("OS_CLOUD")
    credentials = _from_cloud(name, env) if name else _from_environment(env)
    _check(credentials)
    return credentials


def _from_environment(env: Mapping[str, str]) -> Credentials:
    def value(key: str) -> str | None:
        return env.get(key) or None

    return Credentials(
        auth_url=value("OS_AUTH_URL") or "",
        project_id=value("OS_PROJECT_ID") or value("OS_TENANT_ID"),
        project_name=value("OS_PROJECT_NAME") or value("OS_TENANT_NAME"),
        project_domain_name=value("OS_PROJECT_DOMAIN_NAME") or DEFAULT_DOMAIN,
        username=value("OS_USERNAME"),
        password=value("OS_PASSWORD"),
        user_domain_name=value("OS_USER_DOMAIN_NAME") or DEFAULT_DOMAIN,
        access_key=value("OS_ACCESS_KEY"),
        secret_key=value("OS_SECRET_KEY"),
        source="environment (OS_*)",
    )


def _from_cloud(name: str, env: Mapping[str, str]) -> Credentials:
    found = _find(env, "OS_CLIENT_CONFIG_FILE", _NAMES)
    if found is None:
        raise ConfigError(
            f"cloud {name!r}: no clouds.yaml found (looked in {', '.join(map(str, _places(env)))})"
        )
    clouds = _read(found).get("clouds") or {}
    if not isinstance(clouds, dict) or name not in clouds:
        known = ", ".join(sorted(clouds)) if isinstance(clouds, dict) else ""
        raise ConfigError(f"cloud {name!r} is not in {found} (clouds there: {known or 'none'})")
    secure_file = _secure_file(env, found)
    secure = (_read(secure_file).get("clouds") or {}) if secure_file else {}
    entry = _merged(_mapping(clouds[name]), _mapping(secure.get(name)))
    auth = _mapping(entry.get("auth"))

    def text(*keys: str) -> str | None:
        for where in (auth, entry):
            for key in keys:
                value = where.get(key)
                if value not in (None, ""):
                    return str(value)
        return None

    return Credentials(
        auth_url=text("auth_url") or "",
        project_id=text("project_id", "tenant_id"),
        project_name=text("project_name", "tenant_name"),
        project_domain_name=text("project_domain_name", "domain_name") or DEFAULT_DOMAIN,
        username=text("username"),
        password=text("password"),
        user_domain_name=text("user_domain_name", "domain_name") or DEFAULT_DOMAIN,
        access_key=text("access_key", "ak"),
        secret_key=text("secret_key", "sk"),
        source=f"cloud {name!r} in {found}",
    )


def _check(credentials: Credentials) -> None:
    where = credentials.source
    if not credentials.auth_url:
        raise ConfigError(f"{where}: no auth URL (OS_AUTH_URL, or auth.auth_url in clouds.yaml)")
    if not credentials.auth_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: the auth URL must start with http:// or https://")
    if not (credentials.project_id or credentials.project_name):
        raise ConfigError(f"{where}: no project (OS_PROJECT_ID or OS_PROJECT_NAME)")
    if credentials.signs:
        return
    if bool(credentials.access_key) != bool(credentials.secret_key):
        raise ConfigError(f"{where}: an access key needs its secret key (OS_SECRET_KEY) too")
    if not (credentials.username and credentials.password):
        raise ConfigError(
            f"{where}: no credentials (OS_USERNAME and OS_PASSWORD, "
            "or OS_ACCESS_KEY and OS_SECRET_KEY)"
        )


def _places(env: Mapping[str, str]) -> list[Path]:
    home = Path(env.get("HOME") or Path.home())
    return [Path.cwd(), home / ".config" / "openstack", Path("/etc/openstack")]


def _secure_file(env: Mapping[str, str], clouds_file: Path) -> Path | None:
    """OS_CLIENT_SECURE_FILE, else the secure.yaml beside the clouds.yaml in use (also one
    named by OS_CLIENT_CONFIG_FILE), else one in the usual places."""
    if not env.get("OS_CLIENT_SECURE_FILE"):
        for name in _SECURE_NAMES:
            if (clouds_file.parent / name).is_file():
                return clouds_file.parent / name
    return _find(env, "OS_CLIENT_SECURE_FILE", _SECURE_NAMES)


def _find(env: Mapping[str, str], variable: str, names: tuple[str, ...]) -> Path | None:
    override = env.get(variable)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ConfigError(f"{variable} names {path}, which is not a file")
        return path
    for place in _places(env):
        for name in names:
            if (place / name).is_file():
                return place / name
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{at}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path} does not hold a mapping")
    return document


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, nested mappings merged (secure.yaml's way)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged
