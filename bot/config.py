"""The rollback config file: environments, their targets, approvers and policies.

One YAML file describes everything the bot may roll back. Each actions module
owns the pydantic model of its target's parameters; this module assembles
them into the file's schema with `kind` as the discriminator, adds the
environment-level policy, and turns validation errors into one line per
problem that names the file and the field path as a person would write it
(`environments.prod.targets.app.namespace: field required`). Unknown keys are
errors everywhere: a misspelt `aproovers` must not silently mean "nobody".

Reading the file is bounded before anything is built from it, because the
file may be wrong in ways that hurt: a directory or a binary, text in another
encoding, a YAML alias bomb (a few hundred bytes whose aliases expand to
billions of nodes, which `${NAME}` expansion would copy), or nesting deep
enough to overflow the stack. `_BoundedLoader` is PyYAML's safe loader with a
depth limit checked while composing (before recursion can overflow) and a
count of aliases; the composed node graph's expanded size is then counted
with memoisation (cheap even for a bomb) and refused over a limit, all before
any Python object is constructed. Each failure is one line naming the file.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from actions.configfiles import ConfigFilesParams
from actions.database import DatabaseParams
from actions.docker import DockerParams
from actions.http import Communications, Maintenance, Metrics
from actions.kubernetes import KubernetesParams
from actions.loadbalancer import BlueGreenParams
from actions.params import Strict, seconds_of


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


class ConfigError(Exception):
    """The config file cannot be used; `problems` has one line per problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_ALIASES = 200
MAX_NODES = 100_000


class _TooBig(yaml.YAMLError):
    """The YAML is well-formed but past one of our limits."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses deep nesting and alias bombs while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _TooBig(f"more than {MAX_ALIASES} YAML aliases (*name); refused")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _TooBig(f"nested more than {MAX_DEPTH} levels deep; refused")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Count the nodes `node` becomes once every alias is copied out (memoised by identity)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            size += _expanded_size(key, sizes) + _expanded_size(value, sizes)
    sizes[id(node)] = size
    return size


_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _read_text(path: Path) -> str:
    """The file's text, or ConfigError saying in one line why it cannot be read.

    The file is opened without blocking and must be a regular file: a FIFO would wait for
    a writer forever and a device such as /dev/zero never ends, so neither is read at all.
    At most MAX_FILE_BYTES + 1 bytes are read, whatever the file claims its size is.
    """
    try:
        _refuse_special(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot be read: {exc.strerror or exc}"]) from None
    try:
        # Again on what was opened: the name may have been replaced in between.
        _refuse_special(path, os.fstat(fd).st_mode)
        with os.fdopen(fd, "rb") as file:
            fd = -1
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, [f"cannot be read: {exc.strerror or exc}"]) from None
    finally:
        if fd != -1:
            os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(path, [f"larger than {MAX_FILE_BYTES} bytes; refused"])
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            raise ConfigError(path, [f"is {encoding} text (byte-order mark); save it as UTF-8"])
    if b"\0" in data:
        raise ConfigError(path, ["is a binary file (it contains NUL bytes), not YAML text"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path,
            [
                f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                "save it as UTF-8"
            ],
        ) from None
    _refuse_unprintable(text, path)
    return text


def _refuse_special(path: Path, mode: int) -> None:
    """Refuse anything but a regular file: a directory, a FIFO, a device, a socket."""
    if stat.S_ISDIR(mode):
        raise ConfigError(path, ["is a directory, not a config file"])
    if not stat.S_ISREG(mode):
        raise ConfigError(path, [f"is a {_file_kind(mode)}, not a regular file; refused"])


def _file_kind(mode: int) -> str:
    """Name a file type that is not a regular file, in words."""
    for test, kind in (
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return kind
    return "special file"


# What YAML 1.1 allows in a stream (PyYAML's Reader.NON_PRINTABLE is the complement): tab,
# line breaks, printable ASCII, NEL and the printable Unicode ranges. Anything else is refused
# here with its line and column, before PyYAML would refuse it with a traceback's wording.
_UNPRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _refuse_unprintable(text: str, path: Path) -> None:
    """Refuse a control character with its line and column, the way an editor counts them."""
    found = _UNPRINTABLE.search(text)
    if found is None:
        return
    line = text.count("\n", 0, found.start()) + 1
    column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
    raise ConfigError(
        path,
        [
            f"line {line}, column {column}: control character U+{ord(found.group()):04X} "
            "is not allowed in YAML; remove it"
        ],
    )


def _parse_yaml(text: str, path: Path) -> Any:
    """Compose within the limits, refuse an oversized expansion, then construct."""
    try:
        loader = _BoundedLoader(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}".replace("\n", " ")]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_NODES:
            raise _TooBig(f"expands to {size} YAML nodes (limit {MAX_NODES}); refused")
        return loader.construct_document(node)
    except _TooBig as exc:
        raise ConfigError(path, [str(exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}".replace("\n", " ")]) from None
    except RecursionError:
        raise ConfigError(path, ["nested too deeply to read; refused"]) from None
    finally:
        loader.dispose()


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> RollbackConfig:
    """Read and validate the config file, expanding `${NAME}` from the environment."""
    path = Path(path)
    raw = _parse_yaml(_read_text(path), path)
    problems: list[str] = []
    used: list[str] = []
    raw = _expand(raw, os.environ if environ is None else environ, (), problems, used)
    if problems:
        raise ConfigError(path, problems)
    config = parse_config(raw, path=path)
    config._expanded = tuple(dict.fromkeys(used))
    return config


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(
    value: Any,
    environ: Mapping[str, str],
    where: tuple[Any, ...],
    problems: list[str],
    used: list[str],
) -> Any:
    """Replace `${NAME}` in every string; an unset NAME is a problem naming the field."""
    if isinstance(value, dict):
        return {k: _expand(v, environ, (*where, k), problems, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, (*where, i), problems, used) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    parts = _url_parts(value)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            problems.append(f"{'.'.join(map(str, where))}: environment variable {name} is not set")
            return match.group(0)
        if _secret_where(where, parts, match.start()):
            used.append(environ[name])
        return _encoded_for(parts, match.start(), environ[name])

    return _VARIABLE.sub(substitute, value)


# A field whose name says it holds a credential, or a whole URL (an incoming webhook's
# URL is its key): a `${NAME}` there is a secret, masked wherever text leaves the bot.
_SECRET_FIELD = re.compile(r"(?i)token|passw|secret|key|credential|auth|cookie|dsn|url|webhook")


def _secret_where(where: tuple[Any, ...], parts: tuple[int, int, int] | None, at: int) -> bool:
    """Whether a `${NAME}` at `at` of the string at `where` is a secret, to be masked.

    In a URL anything but the host may be a credential (user information, a key in the
    path as Slack's webhooks have, a token in the query); elsewhere only a field whose name
    says so. A namespace, a name or a channel taken from the environment is not masked:
    masking it would make every message about the target unreadable and hide nothing.
    """
    if parts is not None:
        host, path, _query = parts
        return not host <= at < path
    return bool(where) and isinstance(where[-1], str) and bool(_SECRET_FIELD.search(where[-1]))


def _url_parts(template: str) -> tuple[int, int, int] | None:
    """Where a URL's host, path and query start in `template` (userinfo before host).

    Computed on the template, before `${NAME}` is replaced, so a value cannot move the
    boundaries (RFC 3986 section 3: `//authority` ends at the first `/`, `?` or `#`; the
    path at `?` or `#`). None when the string is not a `scheme://` URL.
    """
    scheme = re.match(r"(?i)[a-z][a-z0-9+.-]*://", template)
    if scheme is None:
        return None
    authority = scheme.end()
    end = len(template)
    path = min((i for i in (template.find(c, authority) for c in "/?#") if i != -1), default=end)
    query = min((i for i in (template.find(c, path) for c in "?#") if i != -1), default=end)
    at = template.rfind("@", authority, path)
    host = authority if at == -1 else at + 1
    return host, path, query


def _encoded_for(parts: tuple[int, int, int] | None, at: int, value: str) -> str:
    """Percent-encode `value` for the part of the URL it lands in (RFC 3986 section 2.1).

    In the userinfo, the query and the fragment every reserved character is encoded, so a
    token with `+ / = &` reaches the server as it was; in the path `/` is kept, so a value
    may name several segments (a webhook's `T0/B0/key`); the host is left as it is.
    """
    if parts is None:
        return value
    host, path, query = parts
    if at < host:
        return quote(value, safe="")
    if at < path:
        return value
    if at < query:
        return quote(value, safe="/")
    return quote(value, safe="")


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
