"""The rollback config file: environments, their targets, approvers and policies.

One YAML file describes everything the bot may roll back. Each actions module
owns the pydantic model of its target's parameters; this module assembles
them into the file's schema with `kind` as the discriminator, adds the
environment-level policy, and turns validation errors into one line per
problem that names the file and the field path as a person would write it
(`environments.prod.targets.app.namespace: field required`). Unknown keys are
errors everywhere: a misspelt `aproovers` must not silently mean "nobody".

Reading the file (bounded against hostile input, `${NAME}` expanded from the
environment) is `bot.config_file`'s; this module validates what it returns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from actions.configfiles import ConfigFilesParams
from actions.database import DatabaseParams
from actions.docker import DockerParams
from actions.http import Communications, Maintenance, Metrics
from actions.kubernetes import KubernetesParams
from actions.loadbalancer import BlueGreenParams
from actions.params import Strict, seconds_of
from bot.config_file import ConfigError, read_config_file


class FullParams(Strict):
    """The procedures' full-system rollback: other targets of the same environment, in order."""

    kind: Literal["full"]
    targets: list[str] = Field(min_length=1)


TargetParams = Annotated[
    KubernetesParams
    | DockerParams
    | BlueGreenParams
    | ConfigFilesParams
    | DatabaseParams
    | FullParams,
    Field(discriminator="kind"),
]
TARGET_KINDS = ("kubernetes", "docker", "bluegreen", "config", "database", "full")

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_GROUP_ID = re.compile(r"^S[A-Z0-9]{2,}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
PRODUCTION_NAMES = frozenset({"prod", "production"})
"""Environments where drills are refused unless `drills_allowed: true` says otherwise."""


class Approvers(Strict):
    """Who may approve: Slack user ids (U…/W…) and user-group ids (S…)."""

    users: list[str] = []
    groups: list[str] = []

    @field_validator("users")
    @classmethod
    def _user_ids(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _USER_ID.match(item):
                raise ValueError(f"{item!r} is not a Slack user id (U… or W…)")
        return value

    @field_validator("groups")
    @classmethod
    def _group_ids(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _GROUP_ID.match(item):
                raise ValueError(f"{item!r} is not a Slack user-group id (S…)")
        return value


SEVERITIES = ("critical", "high", "medium", "low")


class CommunicationsPolicy(Communications):
    """The post-rollback communications, and for which severities customers are told.

    The procedures tell customers only "if needed": the rollback form asks, its default
    being whether the request's severity is in `notify_customers`, and the answer covers
    everything customers see (the status page and the e-mail).
    """

    notify_customers: list[Literal["critical", "high", "medium", "low"]] = ["critical", "high"]

    def notifies(self, severity: str) -> bool:
        """Whether customers are told by default at `severity`."""
        return severity in self.notify_customers


STEP_KINDS = (
    "maintenance_on",
    "maintenance_off",
    "health",
    "status_page",
    "webhook",
    "customer_email",
    "rollout_undo",
    "rollout_status",
    "workload_undo",
    "workload_status",
    "forced_rollback",
    "propose",
    "suspend_sync",
    "stop_workers",
    "start_workers",
    "backup",
    "restore",
    "restart",
    "swap_container",
    "switch_traffic",
    "restore_traffic",
    "pre_rollback_backup",
    "restore_into_recovery",
    "pitr_restore",
    "rds_restore",
    "rds_swap",
    "aurora_restore",
    "aurora_swap",
    "swap",
    "verify",
    "migration_rollback",
    "alembic_downgrade",
    "flyway_undo",
    "golang_migrate_down",
)
"""The step kinds a `timeouts:` key may name: an action's name after its dot
(`kubernetes.rollout_status` → `rollout_status`); `maintenance` names both toggles."""
MAX_TIMEOUT = 24 * 3600.0


def duration(value: Any) -> float:
    """Seconds from `90`, `90s`, `10m`, `1h30m` (`actions.params.seconds_of`), within bounds."""
    seconds = seconds_of(value)
    if not 0 < seconds <= MAX_TIMEOUT:
        raise ValueError(f"{value!r}: a timeout must be more than 0 and at most 24h")
    return seconds


def _timeouts(value: Any) -> dict[str, float]:
    """A `timeouts:` mapping of step kind to duration, validated, `maintenance` expanded."""
    if not isinstance(value, dict):
        raise ValueError("timeouts: give a mapping of step kind to duration, e.g. {health: 5m}")
    known = (*STEP_KINDS, "maintenance")
    parsed: dict[str, float] = {}
    for kind, raw in value.items():
        if kind not in known:
            raise ValueError(
                f"timeouts.{kind}: unknown step kind; one of: {', '.join(sorted(known))}"
            )
        try:
            seconds = duration(raw)
        except ValueError as exc:
            raise ValueError(f"timeouts.{kind}: {exc}") from None
        for name in ("maintenance_on", "maintenance_off") if kind == "maintenance" else (kind,):
            parsed[name] = seconds
    return parsed


class Thresholds(Strict):
    """The monitoring thresholds that raise a Critical incident."""

    error_rate_percent: float = Field(default=50.0, gt=0, le=100)
    response_time_ms: float = Field(default=5000.0, gt=0)


class Monitoring(Strict):
    """What monitoring rolls back, and how often the bot itself reads the metrics (0: never)."""

    target: str
    poll_seconds: float = Field(default=30.0, ge=0)
    healthy_after: float = 1800.0
    """Seconds of readings within the thresholds after which the version running is recorded
    as known healthy (`30m`, `2h`; 0: never; needs `poll_seconds`)."""

    @field_validator("healthy_after", mode="before")
    @classmethod
    def _healthy_after(cls, value: Any) -> float:
        return seconds_of(value)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_AT = re.compile(r"^(?:(?P<day>[A-Za-z]{3})\s+)?(?P<hour>\d{1,2}):(?P<minute>\d{2})$")


class DrillSchedule(Strict):
    """A target's scheduled drill (`drills:` inside the target; bot.application.drill_schedule).

    `every`: how often (`7d`); `at`: when, in UTC (`Tue 10:00`, or `10:00` any day);
    `rto`: the recovery-time objective a drill's time to recover is held to (`15m`).
    """

    every: timedelta
    at: str
    rto: timedelta | None = None

    @field_validator("every", "rto", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str | int | float):
            seconds = seconds_of(value)
            if seconds <= 0:
                raise ValueError("must be longer than zero")
            return timedelta(seconds=seconds)
        return value

    @field_validator("at")
    @classmethod
    def _at(cls, value: str) -> str:
        found = _AT.match(value.strip())
        day = (found.group("day") or "").lower() if found else ""
        if (
            found is None
            or (day and day not in WEEKDAYS)
            or int(found.group("hour")) > 23
            or int(found.group("minute")) > 59
        ):
            raise ValueError(f"{value!r} is not a time like 'Tue 10:00' or '10:00' (UTC)")
        return value.strip()

    @property
    def weekday(self) -> int | None:
        """Monday 0 … Sunday 6, or None for any day."""
        day = self.at.split()[0].lower() if " " in self.at else ""
        return WEEKDAYS.index(day) if day else None

    @property
    def time(self) -> tuple[int, int]:
        """(hour, minute), UTC."""
        hour, minute = self.at.split()[-1].split(":")
        return int(hour), int(minute)


def _drill_schedules(targets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, DrillSchedule]]:
    """Take each target's `drills:` (which the target kinds' own models would refuse)."""
    kept: dict[str, Any] = {}
    schedules: dict[str, DrillSchedule] = {}
    for name, target in targets.items():
        if isinstance(target, dict) and "drills" in target:
            target = dict(target)
            try:
                schedules[str(name)] = DrillSchedule.model_validate(target.pop("drills"))
            except ValidationError as exc:
                said = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}".removeprefix(": ")
                    for e in exc.errors()
                )
                raise ValueError(f"targets.{name}.drills.{said}") from None
        kept[name] = target
    return kept, schedules


class Environment(Strict):
    """An environment's channel, approvers, policies, endpoints and targets."""

    incident_channel: str
    approvers: Approvers
    approvals_required: int = Field(default=1, ge=1, le=10)
    approval_ttl_minutes: float = Field(default=30.0, gt=0)
    auto_rollback: bool = False
    veto_seconds: float = Field(default=120.0, ge=0)
    # Anti-flap: within this window after monitoring approved a rollback of a target, or
    # after any rollback of it succeeded, monitoring opens incidents but never approves one.
    auto_rollback_cooldown_minutes: float = Field(default=60.0, ge=0)
    break_glass: bool = False
    dedicated_channel: bool = False
    thresholds: Thresholds = Thresholds()
    health_url: str | None = None
    maintenance: Maintenance | None = None
    metrics: Metrics | None = None
    monitoring: Monitoring | None = None
    communications: CommunicationsPolicy = CommunicationsPolicy()
    timeouts: dict[str, float] = {}
    """Step timeouts for every plan of the environment, by step kind (`STEP_KINDS`)."""
    target_timeouts: dict[str, dict[str, float]] = {}
    """Each target's own `timeouts:` (written inside the target; moved here when read)."""
    # Drills (bot/application/drills.py): None means allowed unless the environment is named prod or
    # production; a drill needs this many approvals (not `approvals_required`); a target not
    # drilled within `drill_every` (e.g. 30d, 12h, 2w) is flagged.
    drills_allowed: bool | None = None
    drill_approvals_required: int = Field(default=1, ge=1, le=10)
    drill_every: timedelta = timedelta(days=30)
    target_drills: dict[str, DrillSchedule] = {}
    """Each target's scheduled drill (`drills:` inside the target; moved here when read)."""
    targets: dict[str, TargetParams]

    @model_validator(mode="before")
    @classmethod
    def _take_timeouts(cls, data: Any) -> Any:
        """Read `timeouts:` at the environment and inside each target (which the target
        kinds' own models would refuse as unknown keys)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "target_timeouts" in data:
            raise ValueError("target_timeouts: unknown key (write timeouts: inside the target)")
        if "target_drills" in data:
            raise ValueError("target_drills: unknown key (write drills: inside the target)")
        if isinstance(data.get("targets"), dict):
            data["targets"], data["target_drills"] = _drill_schedules(data["targets"])
        if "timeouts" in data:
            data["timeouts"] = _timeouts(data["timeouts"])
        targets = data.get("targets")
        if isinstance(targets, dict):
            own: dict[str, dict[str, float]] = {}
            kept: dict[str, Any] = {}
            for name, target in targets.items():
                if isinstance(target, dict) and "timeouts" in target:
                    target = dict(target)
                    try:
                        own[str(name)] = _timeouts(target.pop("timeouts"))
                    except ValueError as exc:
                        raise ValueError(f"targets.{name}.{exc}") from None
                kept[name] = target
            data["targets"], data["target_timeouts"] = kept, own
        return data

    def step_timeout(self, target: str, source: str | None, name: str) -> float | None:
        """The configured timeout of step `name` (dotted) in a plan of `target`, if any:
        the step's own target's, then the rolled-back target's, then the environment's."""
        kind = name.rsplit(".", 1)[-1]
        for scope in (source, target):
            found = self.target_timeouts.get(scope or "", {}).get(kind)
            if found is not None:
                return found
        return self.timeouts.get(kind)

    @field_validator("drill_every", mode="before")
    @classmethod
    def _period(cls, value: Any) -> Any:
        if isinstance(value, str):
            seconds = seconds_of(value)
            if seconds <= 0:
                raise ValueError("the period must be longer than zero")
            return timedelta(seconds=seconds)
        return value

    def allows_drills(self, name: str) -> bool:
        """Whether `/rollback drill` may run here: `drills_allowed`, else not in prod/production."""
        if self.drills_allowed is not None:
            return self.drills_allowed
        return name not in PRODUCTION_NAMES

    @field_validator("targets")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"target name {name!r} must be lowercase letters, digits, - or _")
        return value

    def members(self, target: str) -> list[str]:
        """The targets a rollback of `target` rolls back: a full one's members, else itself."""
        params = self.targets[target]
        return list(params.targets) if isinstance(params, FullParams) else [target]

    @model_validator(mode="after")
    def _check(self) -> Environment:
        if not self.approvers.users and not self.approvers.groups:
            raise ValueError("approvers: name at least one user or group")
        if self.monitoring is not None and self.monitoring.target not in self.targets:
            raise ValueError(f"monitoring.target: no target named {self.monitoring.target!r}")
        for name, target in self.targets.items():
            if isinstance(target, DatabaseParams) and target.rds is None and not target.backups:
                raise ValueError(
                    f"targets.{name}.backups: required for a self-hosted database "
                    "(the pre-rollback backup is written there)"
                )
            if isinstance(target, FullParams):
                for member in target.targets:
                    member_params = self.targets.get(member)
                    if member_params is None:
                        raise ValueError(f"targets.{name}.targets: no target named {member!r}")
                    if isinstance(member_params, FullParams):
                        raise ValueError(f"targets.{name}.targets: {member!r} is itself 'full'")
        return self


class RollbackConfig(Strict):
    """The whole file."""

    environments: dict[str, Environment] = Field(min_length=1)
    time_zone: str = "UTC"
    """The workspace's IANA time zone (`Europe/Berlin`): the RCA file's times are in it."""
    # The secret values `${NAME}` expanded to (in a URL, or a credential's field):
    # bot/secrets.py masks them wherever text leaves.
    _expanded: tuple[str, ...] = PrivateAttr(default=())

    @property
    def expanded_values(self) -> tuple[str, ...]:
        """The secret values `${NAME}` references were replaced with when the file loaded."""
        return self._expanded

    @field_validator("environments")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(
                    f"environment name {name!r} must be lowercase letters, digits, - or _"
                )
        return value

    @field_validator("environments")
    @classmethod
    def _scheduled_drills(cls, value: dict[str, Environment]) -> dict[str, Environment]:
        """A scheduled drill must be one the environment allows (a database's anywhere)."""
        for name, env in value.items():
            for target in env.target_drills:
                restore = isinstance(env.targets.get(target), DatabaseParams)
                if not restore and not env.allows_drills(name):
                    raise ValueError(
                        f"{name}.targets.{target}.drills: drills are not allowed in {name} (only "
                        "a database's restore drill runs in production; set "
                        "`drills_allowed: true` to allow the others)"
                    )
        return value

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone name (such as UTC or Europe/Berlin)"
            ) from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The workspace's time zone (`time_zone`)."""
        return ZoneInfo(self.time_zone)

    def environment(self, name: str) -> Environment:
        """Return an environment, or raise UnknownTarget naming the known ones."""
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise UnknownTarget(f"unknown environment '{name}' (known: {known})") from None

    def target(self, env: str, name: str) -> TargetParams:
        """Return a target's parameters, or raise UnknownTarget naming the known ones."""
        environment = self.environment(env)
        try:
            return environment.targets[name]
        except KeyError:
            known = ", ".join(sorted(environment.targets))
            raise UnknownTarget(f"unknown target '{name}' in {env} (known: {known})") from None


class UnknownTarget(LookupError):
    """A target or environment the config file does not name."""


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> RollbackConfig:
    """Read and validate the config file, expanding `${NAME}` from the environment."""
    path = Path(path)
    raw, secrets = read_config_file(path, environ=os.environ if environ is None else environ)
    config = parse_config(raw, path=path)
    config._expanded = secrets
    return config


def parse_config(raw: Any, *, path: Path) -> RollbackConfig:
    """Validate already-parsed YAML, or raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(path, ["the file must be a mapping with an 'environments' key"])
    try:
        return RollbackConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, [_problem(error) for error in exc.errors()]) from None


_MESSAGES = {
    "missing": "field required",
    "extra_forbidden": "unknown key",
}


def _problem(error: Any) -> str:
    loc = _field_path(error["loc"])
    message = _MESSAGES.get(error["type"]) or _plain(error["msg"])
    if loc and _NESTED.match(message):  # raised for a field below loc (`timeouts:` keys)
        return f"{loc}.{message}"
    return f"{loc}: {message}" if loc else message


_NESTED = re.compile(r"^(targets\.[a-z0-9_-]+\.)?timeouts(\.[a-z_]+)?: ")


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for index, item in enumerate(loc):
        after_target_name = index >= 2 and loc[index - 2] == "targets"
        if after_target_name and item in TARGET_KINDS:
            continue
        parts.append(str(item))
    return ".".join(parts)


def _plain(message: str) -> str:
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def summary(config: RollbackConfig) -> list[str]:
    """Describe the environments and targets in a few lines for `check-config`."""
    lines = []
    for env_name, env in config.environments.items():
        approvers = len(env.approvers.users) + len(env.approvers.groups)
        lines.append(
            f"environment {env_name}: channel {env.incident_channel}, "
            f"{env.approvals_required} approval(s) from {approvers} approver entr"
            f"{'y' if approvers == 1 else 'ies'}, "
            f"auto-rollback {'on' if env.auto_rollback else 'off'}, "
            f"break-glass {'allowed' if env.break_glass else 'off'}"
        )
        for name, target in env.targets.items():
            lines.append(f"  target {name}: {describe_target(target)}")
    return lines


def describe_target(target: TargetParams) -> str:
    """One line naming what a target is."""
    match target:
        case KubernetesParams():
            workers = f", workers {', '.join(target.workers)}" if target.workers else ""
            return f"kubernetes {target.workload}/{target.name} in {target.namespace}{workers}"
        case DockerParams():
            return f"docker container {target.container} ({target.image})"
        case BlueGreenParams():
            return f"bluegreen {target.scope}"
        case ConfigFilesParams():
            return f"config {target.directory} (backups in {target.backups})"
        case DatabaseParams():
            methods = "/".join(target.methods)
            return f"database {target.connection.dbname} ({methods})"
        case FullParams():
            return f"full system: {' then '.join(target.targets)}"
    raise AssertionError(target)
