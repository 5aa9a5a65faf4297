"""Service settings: a TOML file, then ``AUTOFOCUS_<NAME>`` environment variables, then overrides.

``Settings`` subclasses the flat ``autofocus.hardware.HardwareConfig`` (backend and device
options) and adds the service's own settings, so every setting, hardware or service, is one
flat name that works the same in the TOML file (``--config`` / ``AUTOFOCUS_CONFIG``), as an
environment variable ``AUTOFOCUS_<NAME>`` and as an override from the command line.

Priority, highest first: overrides (``autofocus serve --port ...``), environment variables,
the TOML file, the defaults below. Structured values in environment variables are JSON, e.g.
``AUTOFOCUS_STAGE_LIMITS_UM='[-300, 300]'`` or ``AUTOFOCUS_CORS_ORIGINS='["http://lab-pc:8000"]'``.

A wrong value raises ``ConfigurationError`` naming the setting and what is allowed; the
service never falls back to the simulator or a default on its own.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from autofocus.aggregation import DEFAULT_AGGREGATE, Aggregate
from autofocus.hardware import HardwareConfig
from drivers.errors import ConfigurationError

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "NON_SETTING_ENV", "Settings", "load_settings", "unknown_env_settings"]

ENV_PREFIX = "AUTOFOCUS_"
CONFIG_ENV = "AUTOFOCUS_CONFIG"
# AUTOFOCUS_* variables that are not settings but are read elsewhere on purpose.
NON_SETTING_ENV: frozenset[str] = frozenset({CONFIG_ENV, "AUTOFOCUS_CACHE_DIR"})


def _state_dir() -> Path:
    """Where the service keeps its state by default: ``$XDG_STATE_HOME/ldse-autofocus``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ldse-autofocus"


def _data_dir() -> Path:
    """Where acquired datasets go by default: ``$XDG_DATA_HOME/ldse-autofocus/datasets``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ldse-autofocus" / "datasets"


class Settings(HardwareConfig, BaseSettings):
    """Every setting of ``autofocus serve``: the hardware fields plus the service's own."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_assignment=True,
        case_sensitive=False,
    )

    # -- network -------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="address to bind; loopback by default")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port")

    # -- security ------------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        default=None,
        description="key required in the X-API-Key header for every request that moves hardware or changes "
        "state; empty: `autofocus serve` generates a random key at start and prints it",
    )
    read_requires_key: bool = Field(
        default=False, description="also require the key for read-only endpoints (status, frames, runs, ...)"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed by CORS (e.g. http://lab-pc:8000); empty: CORS off"
    )
    upload_limit_bytes: int = Field(
        default=50_000_000, ge=1024, le=1_000_000_000, description="largest request body accepted (413 above)"
    )

    # -- model -----------------------------------------------------------------------------------
    model_path: Path | None = Field(
        default=None, description="checkpoint (.pt) or ONNX file of the defocus model; empty: the bundled model"
    )
    near_model: str = Field(
        default="auto",
        description="near-focus model read where the first model places a frame near focus (docs/autofocus.md): "
        "'auto' (the bundled one with the bundled model, none with another model), 'none', or a .pt/.onnx file",
    )
    far_model: str = Field(
        default="auto",
        description="far-defocus model read where the first model places a frame beyond +-6 um (docs/autofocus.md): "
        "'auto' (the bundled one with the bundled model, none with another model), 'none', or a .pt/.onnx file",
    )
    runtime: Literal["torch", "onnx"] = Field(default="torch", description="inference runtime")
    predictor_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="CPU threads: each cuts and filters a share of the tiles, and with ONNX each runs a session on "
        "a share of the batch",
    )
    predictor_aggregate: Aggregate = Field(
        default=DEFAULT_AGGREGATE,
        description="how tile estimates are combined into one defocus (mean is the paper's; trimmed is measured "
        "best in closed loop, docs/autofocus.md)",
    )
    predictor_max_tiles: int | None = Field(
        default=None,
        ge=1,
        description="non-blank tiles used per frame, centre first; empty: every tile (the paper's method). "
        "On 2 CPU threads with ONNX every tile of a full 2592x1944 frame keeps within the camera's 71 ms frame "
        "period (54-57 ms); 32 (29-30 ms) leaves room on a slower machine or with torch",
    )

    # -- storage ---------------------------------------------------------------------------------
    runs_db: Path = Field(
        default_factory=lambda: _state_dir() / "runs.sqlite3",
        description="SQLite file recording every autofocus run (created if missing)",
    )
    calibration_file: Path = Field(
        default_factory=lambda: _state_dir() / "calibration.json",
        description="focus calibration (autofocus calibrate, PUT /calibration or POST /calibration/measure) used "
        "by /autofocus and /focus-lock; loaded at start when it exists, replaced atomically",
    )
    data_root: Path = Field(
        default_factory=_data_dir,
        description="the only folder under which POST /datasets/acquire may write (created if missing)",
    )

    objective: str | None = Field(
        default=None,
        description="objective name recorded in acquired datasets; empty: sim_objective on the simulator "
        "(required for real hardware)",
    )

    # -- live view and jobs ------------------------------------------------------------------------
    stream_fps: float = Field(default=5.0, gt=0, le=30, description="frame rate of GET /stream.mjpg")
    stream_max_s: float = Field(default=3600.0, gt=0, description="longest a single MJPEG stream runs")
    stream_max_clients: int = Field(default=4, ge=1, le=64, description="MJPEG streams served at the same time")
    stream_width_px: int = Field(default=960, ge=64, le=16384, description="width the live view is scaled to")
    jpeg_quality: int = Field(default=80, ge=10, le=100, description="JPEG quality of frames and the stream")
    job_history: int = Field(default=200, ge=1, le=100_000, description="finished jobs kept in memory")
    device_lock_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="how long a move, snap or new job waits for a short device use (never for a job: 409)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="uvicorn and service log level"
    )

    @field_validator("host")
    @classmethod
    def _host_is_address(cls, value: str) -> str:
        if value == "localhost":
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValueError(
                f"host must be an IP address to bind (127.0.0.1 for this machine only, 0.0.0.0 for every "
                f"interface) or 'localhost', got {value!r}"
            ) from exc
        return value

    @field_validator("api_key")
    @classmethod
    def _key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if secret == "":
            return None
        if len(secret) < 8 or not secret.isprintable() or " " in secret:
            raise ValueError("api_key must be at least 8 printable characters without spaces")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_urls(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"each CORS origin must be '*' or start with http:// or https://, got {origin!r}")
        return value

    @field_validator("model_path")
    @classmethod
    def _model_exists(cls, value: Path | None) -> Path | None:
        if value is None or str(value) == "":
            return None
        path = value.expanduser()
        if not path.is_file():
            raise ValueError(f"model_path={str(value)!r} is not a file (a .pt checkpoint or an .onnx model)")
        return path

    @field_validator("near_model", "far_model")
    @classmethod
    def _companion_model_choice(cls, value: str, info: ValidationInfo) -> str:
        if value in ("auto", "none"):
            return value
        path = Path(value).expanduser()
        if not value.strip() or not path.is_file():
            raise ValueError(
                f"{info.field_name}={value!r} must be 'auto', 'none' or an existing .pt checkpoint or .onnx model file"
            )
        return str(path)

    @field_validator("runs_db")
    @classmethod
    def _db_parent_usable(cls, value: Path) -> Path:
        path = value.expanduser()
        if path.exists() and not path.is_file():
            raise ValueError(f"runs_db={str(value)!r} exists and is not a file")
        return path

    @field_validator("data_root")
    @classmethod
    def _data_root_usable(cls, value: Path) -> Path:
        path = value.expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"data_root={str(value)!r} exists and is not a folder")
        return path

    def hardware_config(self) -> HardwareConfig:
        """The ``HardwareConfig`` part of these settings, for ``open_hardware``."""
        return HardwareConfig(**{name: getattr(self, name) for name in HardwareConfig.model_fields})

    def public_dict(self) -> dict[str, Any]:
        """Every setting as JSON-friendly values, the API key masked (for logs and /status)."""
        data = self.model_dump(mode="json")
        data["api_key"] = "***" if self.api_key is not None else None
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Overrides, then ``AUTOFOCUS_*`` variables, then the TOML file (if one was given)."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file") is not None:
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def unknown_env_settings(environ: Mapping[str, str]) -> list[str]:
    """``AUTOFOCUS_*`` variables that name no setting (probably typos); the caller warns about them."""
    names = {name.upper() for name in Settings.model_fields}
    return sorted(
        key
        for key in environ
        if key.upper().startswith(ENV_PREFIX)
        and key.upper() not in NON_SETTING_ENV
        and key.upper()[len(ENV_PREFIX) :] not in names
    )


def _describe_validation_error(exc: ValidationError, config_file: Path | None) -> str:
    problems = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"])
        if not name:
            problems.append(err["msg"].removeprefix("Value error, "))
        elif err["type"] == "extra_forbidden":
            where = f" in {config_file}" if config_file is not None else ""
            problems.append(f"{name}{where}: unknown setting (see docs/service.md for the list)")
        else:
            env = f"{ENV_PREFIX}{name.upper()}"
            problems.append(f"{name} (env {env}): {err['msg'].removeprefix('Value error, ')}")
    return "invalid settings: " + "; ".join(problems)


def load_settings(
    config_file: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the settings; ``ConfigurationError`` names the setting when one is wrong.

    ``config_file`` defaults to ``$AUTOFOCUS_CONFIG``; without either no TOML file is read.
    ``environ`` defaults to ``os.environ`` (only used to find the config file; pydantic-settings
    reads the process environment itself).
    """
    env = os.environ if environ is None else environ
    chosen = config_file if config_file not in (None, "") else env.get(CONFIG_ENV) or None
    path = Path(chosen).expanduser() if chosen is not None else None
    if path is not None and not path.is_file():
        raise ConfigurationError(f"config file {str(path)!r} (--config / {CONFIG_ENV}) does not exist")
    settings_cls: type[Settings] = Settings
    if path is not None:
        config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})  # type: ignore[typeddict-item]
        settings_cls = type("Settings", (Settings,), {"model_config": config, "__module__": __name__})
    try:
        return settings_cls(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigurationError(_describe_validation_error(exc, path)) from exc
    except ValueError as exc:  # a malformed TOML file or JSON value in an environment variable
        raise ConfigurationError(f"invalid settings: {exc}") from exc
