"""Configuration: command-line options > ``BROADCASTER_*`` environment > TOML file > defaults."""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from broadcaster.core.errors import ConfigError
from broadcaster.core.units import Duration
from channels import ChannelConfig, channel_types
from channels.registry import load_failure

CONFIG_ENV = "BROADCASTER_CONFIG"
DEFAULT_CONFIG = Path("broadcaster.toml")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_CHANNEL_NAME = re.compile(r"^[a-z0-9-]+$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff: Duration = timedelta(seconds=2)
    backoff_max: Duration = timedelta(minutes=5)


class DeliverySettings(BaseModel):
    """``batch_size`` deliveries travel in one task (1: one task per delivery); each worker process keeps up to
    ``in_flight`` sends going at once, over connections it keeps open between sends."""

    model_config = ConfigDict(extra="forbid")
    lease: Duration = timedelta(minutes=2)
    sweep_every: Duration = timedelta(seconds=30)
    batch_size: int = Field(default=200, ge=1, le=1000)
    in_flight: int = Field(default=64, ge=1, le=256)


_IMPACTS = ("none", "minor", "major", "critical")


class ReminderSettings(BaseModel):
    """Update reminders to responders, and holding statements to customers, for silent open incidents.

    ``after`` is the cadence: one duration for every impact, or a table per impact (an impact missing from
    the table gets neither a default "next update by" nor reminders). From the second period of silence
    on, reminders are escalated: they also go to ``escalate``. ``holding`` lists the impacts (or ``true``
    for all) whose silent incidents also get a holding statement on ``holding_channels`` (empty: every
    enabled channel that is not a reminder channel).
    """

    model_config = ConfigDict(extra="forbid")
    check_every: Duration = timedelta(minutes=1)
    after: Duration | dict[str, Duration] = timedelta(minutes=30)
    channels: list[str] = ["ops"]
    escalate: list[str] = []
    holding: bool | list[str] = []
    holding_channels: list[str] = []

    @field_validator("after")
    @classmethod
    def _known_impacts(cls, value: timedelta | dict[str, timedelta]) -> timedelta | dict[str, timedelta]:
        periods = value.values() if isinstance(value, dict) else [value]
        if any(period.total_seconds() <= 0 for period in periods):
            raise ValueError("must be longer than 0s")
        if isinstance(value, dict) and (unknown := sorted(set(value) - set(_IMPACTS))):
            raise ValueError(f"impacts are {', '.join(_IMPACTS)}, not {', '.join(unknown)}")
        return value

    @field_validator("holding")
    @classmethod
    def _holding_impacts(cls, value: bool | list[str]) -> bool | list[str]:
        if isinstance(value, list) and (unknown := sorted(set(value) - set(_IMPACTS))):
            raise ValueError(f"impacts are {', '.join(_IMPACTS)}, not {', '.join(unknown)}")
        return value

    @field_validator("check_every")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be longer than 0s")
        return value

    def after_for(self, impact: str) -> timedelta | None:
        """The cadence for an incident of this impact; None when it has none."""
        return self.after.get(impact) if isinstance(self.after, dict) else self.after

    def holds_for(self, impact: str) -> bool:
        """Whether a silent incident of this impact gets holding statements."""
        return self.holding if isinstance(self.holding, bool) else impact in self.holding


class MaintenanceSettings(BaseModel):
    """Scheduled maintenance: when subscribers are reminded, and where maintenance is posted."""

    model_config = ConfigDict(extra="forbid")
    #: the reminder goes out this long before the start (0s: no reminder)
    remind_before: Duration = timedelta(hours=1)
    #: empty: every enabled channel that is not a reminder channel
    channels: list[str] = []


class ApiToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    token: SecretStr | None = None
    token_sha256: str | None = None
    scopes: list[str] = ["read"]


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[ApiToken] = []
    #: the largest request body the API reads, in bytes; a larger one is refused with 413 before it is read
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=1024**3)


class SubscriberSettings(BaseModel):
    """``[subscribers]``: unsubscribe links and quarantine (see ``broadcaster.domain.subscribers``)."""

    model_config = ConfigDict(extra="forbid")
    #: signs unsubscribe links (HMAC-SHA256); unset: a random key generated once and kept in the database
    signing_key: SecretStr | None = None
    #: where `broadcaster api` is reachable from the internet (unsubscribe links, the URL a provider signs its
    #: inbound webhook for); unset: ``public_url``
    api_url: str | None = None
    #: a subscriber whose address fails permanently this many times in a row is quarantined
    quarantine_after: int = Field(default=3, ge=1, le=100)

    @field_validator("signing_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. the output of `openssl rand -hex 32`)")
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http://)")
        return value.rstrip("/") if value is not None else None


class Settings(BaseSettings):
    """The whole configuration; see ``config/broadcaster.example.toml``."""

    model_config = SettingsConfigDict(env_prefix="BROADCASTER_", env_nested_delimiter="__", extra="forbid")

    broker_url: str = ""
    #: Redis for what every worker shares (rate limits, circuits, the sweeper's turn); default: the broker
    #: when it is Redis. A RabbitMQ deployment names one here, or each worker process keeps its own.
    redis_url: str = ""
    database_url: str = "sqlite:///broadcaster.db"
    public_url: str = "https://status.example.com"
    retry: RetrySettings = RetrySettings()
    delivery: DeliverySettings = DeliverySettings()
    reminders: ReminderSettings = ReminderSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    api: ApiSettings = ApiSettings()
    subscribers: SubscriberSettings = SubscriberSettings()
    templates_dir: str | None = None
    channels: dict[str, ChannelConfig] = {}

    @field_validator("channels", mode="before")
    @classmethod
    def _typed_channels(cls, raw: Any) -> Any:
        """Validate each channel table against its own type's keys."""
        if not isinstance(raw, dict):
            return raw
        types = channel_types()
        typed: dict[str, Any] = {}
        for name, table in raw.items():
            if not _CHANNEL_NAME.match(name):
                raise ValueError(f"channel name {name!r} may hold only lower-case letters, digits and '-'")
            if isinstance(table, ChannelConfig):
                typed[name] = table
                continue
            kind = table.get("type") if isinstance(table, dict) else None
            if kind not in types:
                known = ", ".join(sorted(types))
                failure = load_failure(kind) if isinstance(kind, str) else None
                broken = f" (its plugin cannot be loaded: {failure})" if failure else ""
                raise ValueError(f"channels.{name}.type must be one of {known}, not {kind!r}{broken}")
            try:
                typed[name] = types[kind].Config.model_validate(table)
            except ValidationError as exc:
                raise ValueError(f"channels.{name}.{ConfigError.from_validation(exc)}") from None
        return typed

    @model_validator(mode="after")
    def _known_fallbacks(self) -> Settings:
        for name, channel in self.channels.items():
            for other in channel.fallback:
                if other not in self.channels:
                    raise ValueError(f"channels.{name}.fallback names unknown channel {other!r}")
        return self

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(REDIS_SCHEMES)

    @property
    def shared_state_url(self) -> str:
        """The Redis that holds the workers' shared guards, or "" when each process keeps its own."""
        if self.redis_url:
            return self.redis_url
        return self.broker_url if self.broker_is_redis else ""

    def retry_for(self, channel: str) -> RetrySettings:
        """The global ``[retry]`` with the channel's own overrides applied; for a channel this configuration does
        not have (a delivery made by a worker configured otherwise), the global ``[retry]`` alone."""
        config = self.channels.get(channel)
        if config is None:
            return self.retry
        return self.retry.model_copy(update=config.retry.model_dump(exclude_none=True))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))


class _TomlSource(PydanticBaseSettingsSource):
    """The TOML file, with ``${NAME}`` read from the environment."""

    path: Path | None = None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        return _interpolate(read_toml(self.path), "")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _interpolate(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{key}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{key}: environment variable {name} is not set")
            return os.environ[name]

        return _VARIABLE.sub(lookup, value)
    return value


def config_path(explicit: str | Path | None = None) -> Path | None:
    """The configuration file in force: ``--config``, else ``BROADCASTER_CONFIG``, else ``./broadcaster.toml``."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the configuration; any problem is one ``ConfigError`` line."""
    source = config_path(path)
    _TomlSource.path = source
    where = f"{source}: " if source else ""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, prefix=f"configuration error: {where}") from None
    finally:
        _TomlSource.path = None
