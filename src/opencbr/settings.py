"""Configuration: a TOML file (``--config`` or ``OPENCBR_CONFIG``) overridden by ``OPENCBR_*``.

Imports nothing of opencbr. Relative paths are resolved once, at load time, so the rest of
the code only ever sees absolute paths.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_REGIONS = ("region1", "region2")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("plain", "json")
# argon2id cost of new password hashes: "production" (argon2's RFC 9106 low-memory profile)
# or "test" (the cheapest argon2id; for test suites only, never for a real service).
PASSWORD_HASH_COSTS = ("production", "test")
# Task-queue URLs: a SQLite file, PostgreSQL (psycopg 3) or Redis.
QUEUE_SCHEMES = (
    "sqlite:///",
    "postgresql://",
    "postgresql+psycopg://",
    "postgres://",
    "redis://",
    "rediss://",
    "unix://",
)


class RegionSettings(BaseModel):
    """One region: a name and where its vaults keep their chunks.

    `storage` is a local path (or file:// URL) or `s3://BUCKET/PREFIX`. The `s3_*` values
    say how to reach the S3 endpoint; each one left unset falls back to the standard
    environment variable (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY). The secret is a SecretStr: it prints as '**********'.
    An unknown key (a typo such as `replication_window`) is refused, never ignored.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,255}$")
    storage: str
    s3_endpoint: str | None = None  # e.g. http://127.0.0.1:8333 (SeaweedFS); unset: AWS
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("s3_endpoint must be an http:// or https:// URL")
        return value

    # Regions this one may replicate to; None means "every other configured region".
    replication_destinations: list[str] | None = None
    # New vaults of the region encrypt their backups at rest (AES-256-GCM, keys wrapped by
    # master_key_file). Turn off only for trusted local disks; existing vaults keep theirs.
    encryption: bool = True
    # Copies INTO this region: MiB/s across all of them, from every process of the
    # database (0 = unlimited), and the UTC time ranges ("22:00-06:00") in which they may
    # run (empty = always). See services/throttle.py.
    replication_rate_limit_mib: float = Field(default=0.0, ge=0)
    replication_windows: list[str] = Field(default_factory=list)

    @field_validator("replication_windows")
    @classmethod
    def _windows_are_ranges(cls, value: list[str]) -> list[str]:
        for window in value:
            parse_window(window)  # raises ValueError naming the bad range
        return value


class ProtectableRoot(BaseModel):
    """A directory under which a project may register resources and restore into."""

    model_config = ConfigDict(extra="forbid")

    project: str
    path: Path


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OPENCBR_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path(".opencbr")
    database_url: str | None = None
    # Where the task queue lives: the SQLite file <data_dir>/queue.db (one machine), or
    # postgresql://... (Huey's PostgreSQL storage) or redis://... (Redis) for processes on
    # several machines. The database rows stay the truth; the queue only wakes workers.
    queue_url: str | None = None
    # The key that seals stored access-key secrets; every process of one database needs
    # the same file (default <data_dir>/secret.key).
    secret_key_file: Path | None = None
    # The master key that wraps every project's data keys (encryption at rest); created
    # 0600 on first start (default <data_dir>/master.key). Every process needs the same
    # file; back it up apart from the storage: without it the encrypted data is lost.
    master_key_file: Path | None = None
    listen: str = "127.0.0.1:8080"
    # Prometheus metrics at http://<metrics_listen>/metrics, a listener of their own (off
    # the authenticated API); "" turns it off.
    metrics_listen: str = "127.0.0.1:9464"
    # The URL clients reach us at (put into the token catalog); default: http://<listen>.
    public_url: str | None = None
    token_ttl_seconds: int = Field(default=86400, ge=1)
    max_body_bytes: int = Field(default=12 * 1024 * 1024, ge=1024)
    regions: list[RegionSettings] = Field(default_factory=list)
    protectable_roots: list[ProtectableRoot] = Field(default_factory=list)
    # Run the task-queue consumer inside `opencbr serve` (the embedded mode).
    embedded_worker: bool = True
    worker_threads: int = Field(default=2, ge=1, le=64)
    # Event metrics of an `opencbr worker` at http://<worker_metrics_listen>/metrics
    # ("" = none); the API's `metrics_listen` serves the database's state gauges.
    worker_metrics_listen: str = ""
    # Threads per backup/restore/replication for hashing, compression and I/O.
    io_threads: int = Field(default=2, ge=1, le=64)
    # Chunks (or 4 MiB disk blocks) a backup holds in memory at once: bounds its memory
    # whatever the data's size; 16 keeps two compression threads busy.
    max_chunks_in_flight: int = Field(default=16, ge=2, le=1024)
    # How often the reconciler looks for stuck work, and garbage collection's cadence.
    reconcile_interval_seconds: float = Field(default=30.0, gt=0)
    gc_interval_seconds: float = Field(default=3600.0, gt=0)
    # How often each worker process looks for due policy slots at the latest (between
    # ticks it sleeps until the next slot, so a slot starts on time), and how often
    # retention sweeps every policy and expired backup (it also runs after each policy
    # run and each policy-made backup).
    schedule_tick_seconds: float = Field(default=10.0, gt=0, le=60)
    retention_interval_seconds: float = Field(default=600.0, gt=0)
    # Scheduled verify (services/verify.py): the share of each vault's chunks re-read and
    # checked per day (0 = off), spread over passes every `verify_interval_seconds`.
    verify_percent_per_day: float = Field(default=0.0, ge=0, le=100)
    verify_interval_seconds: float = Field(default=3600.0, gt=0)
    # Chunks younger than this are never collected (protects writers in flight).
    gc_safety_margin_seconds: float = Field(default=3600.0, ge=0)
    # Work rows (backups, restores, replication records) are leased by the worker running
    # them; a lease not renewed for this long means the worker died and the work is rerun.
    lease_seconds: float = Field(default=30.0, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    # zstd level for chunks. Level 1 ran ~45% faster than 3 on the benchmark's text and
    # compressed it as well (3.96x against 3.89x); compression is most of a backup's CPU.
    compression_level: int = Field(default=1, ge=1, le=19)
    log_level: str = "info"
    # Log lines on stderr: "plain" (key=value pairs) or "json" (one object per line).
    log_format: str = "plain"
    # Cost of new password hashes; checking a password uses the cost stored in its hash.
    password_hash_cost: str = "production"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file: the file's values arrive as init arguments.
        return (env_settings, init_settings)

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        return _host_and_port("listen", value)

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen_has_port(cls, value: str) -> str:
        return value and _host_and_port("metrics_listen", value)

    @field_validator("worker_metrics_listen")
    @classmethod
    def _worker_metrics_listen_has_port(cls, value: str) -> str:
        return value and _host_and_port("worker_metrics_listen", value)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        """SQLite, or PostgreSQL through psycopg 3 (the driver installed): a plain
        `postgresql://` or `postgres://` URL means it too (SQLAlchemy would otherwise look
        for psycopg2, which is not there)."""
        if value is None or value.startswith(("sqlite:", "postgresql+psycopg:")):
            return value
        for scheme in ("postgresql://", "postgres://"):
            if value.startswith(scheme):
                return "postgresql+psycopg://" + value.removeprefix(scheme)
        # The message never quotes the URL: it may carry a password.
        raise ValueError(
            "database_url must be sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB"
        )

    @field_validator("queue_url")
    @classmethod
    def _known_queue(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(QUEUE_SCHEMES):
            # The message never quotes the URL: it may carry a password.
            raise ValueError(f"queue_url must start with one of {', '.join(QUEUE_SCHEMES)}")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        return value.lower()

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        if value not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        return value

    @field_validator("password_hash_cost")
    @classmethod
    def _known_password_hash_cost(cls, value: str) -> str:
        if value not in PASSWORD_HASH_COSTS:
            raise ValueError(f"password_hash_cost must be one of {', '.join(PASSWORD_HASH_COSTS)}")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'opencbr.db'}"
        if self.queue_url is None:
            self.queue_url = f"sqlite:///{self.data_dir / 'queue.db'}"
        if self.secret_key_file is None:
            self.secret_key_file = self.data_dir / "secret.key"
        self.secret_key_file = self.secret_key_file.expanduser().resolve()
        if self.master_key_file is None:
            self.master_key_file = self.data_dir / "master.key"
        self.master_key_file = self.master_key_file.expanduser().resolve()
        if not self.regions:
            self.regions = [
                RegionSettings(name=name, storage=str(self.data_dir / "store" / name))
                for name in DEFAULT_REGIONS
            ]
        if not self.protectable_roots:
            # With no roots configured, each region's default project may register
            # resources under data_dir/resources/<region> (a place to try things out).
            self.protectable_roots = [
                ProtectableRoot(project=region.name, path=self.data_dir / "resources" / region.name)
                for region in self.regions
            ]
        names = [region.name for region in self.regions]
        if len(set(names)) != len(names):
            raise ValueError("region names must be unique")
        for region in self.regions:
            unknown = sorted(set(region.replication_destinations or ()) - set(names))
            if unknown:
                raise ValueError(
                    f"region {region.name}: replication_destinations names no configured "
                    f"region: {', '.join(unknown)}"
                )
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.listen}").rstrip("/")

    @property
    def db_url(self) -> str:
        assert self.database_url is not None  # filled by _resolve
        return self.database_url

    @property
    def queue(self) -> str:
        assert self.queue_url is not None  # filled by _resolve
        return self.queue_url

    @property
    def key_file(self) -> Path:
        assert self.secret_key_file is not None  # filled by _resolve
        return self.secret_key_file

    @property
    def master_key_path(self) -> Path:
        assert self.master_key_file is not None  # filled by _resolve
        return self.master_key_file

    def region(self, name: str) -> RegionSettings | None:
        return next((region for region in self.regions if region.name == name), None)

    def replication_destinations(self, name: str) -> list[str]:
        region = self.region(name)
        if region is None:
            return []
        if region.replication_destinations is not None:
            return [d for d in region.replication_destinations if d != name and self.region(d)]
        return [other.name for other in self.regions if other.name != name]


def parse_window(window: str) -> tuple[int, int]:
    """A UTC time range "HH:MM-HH:MM" as (start, end) minutes of the day; an end at or
    before the start runs past midnight ("22:00-06:00"); "00:00-24:00" is the whole day."""
    start, sep, end = window.partition("-")
    if not sep:
        raise ValueError(f"replication window {window!r} is not a range HH:MM-HH:MM (UTC)")
    first, last = _minute_of_day(window, start) % (24 * 60), _minute_of_day(window, end)
    if first == last:
        raise ValueError(f"replication window {window!r} is empty")
    return first, last


def _minute_of_day(window: str, value: str) -> int:
    hours, sep, minutes = value.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"replication window {window!r} is not a range HH:MM-HH:MM (UTC)")
    minute = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or minute > 24 * 60:
        raise ValueError(f"replication window {window!r} names a time that does not exist")
    return minute


def _host_and_port(name: str, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{name} must be HOST:PORT")
    if int(port) > 65535:
        raise ValueError(f"{name}: port {port} is not a TCP port (0-65535)")
    return value


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), apply OPENCBR_* variables, then explicit overrides."""
    path = config or os.environ.get("OPENCBR_CONFIG")
    values: dict[str, Any] = {}
    if path:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    settings = Settings(**values)
    if overrides:
        settings = Settings(**{**settings.model_dump(), **overrides})
    return settings
