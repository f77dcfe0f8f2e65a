"""Reading the rollback config file: bounded, YAML, `${NAME}` expanded; nothing validated.

Reading the file is bounded before anything is built from it, because the
file may be wrong in ways that hurt: a directory or a binary, text in another
encoding, a YAML alias bomb (a few hundred bytes whose aliases expand to
billions of nodes, which `${NAME}` expansion would copy), or nesting deep
enough to overflow the stack. `_BoundedLoader` is PyYAML's safe loader with a
depth limit checked while composing (before recursion can overflow) and a
count of aliases; the composed node graph's expanded size is then counted
with memoisation (cheap even for a bomb) and refused over a limit, all before
any Python object is constructed. Each failure is one line naming the file.

`${NAME}` is then replaced from the environment, percent-encoded for the part of
a URL it lands in; the values that are secrets are returned beside the data, so
`bot.config` can hand them to `bot/secrets.py` to mask. Validating the result
against the schema is `bot.config`'s.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml


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


def read_config_file(path: Path, *, environ: Mapping[str, str]) -> tuple[Any, tuple[str, ...]]:
    """Read the file's YAML and expand `${NAME}`; return it and the secret values expanded."""
    raw = _parse_yaml(_read_text(path), path)
    problems: list[str] = []
    used: list[str] = []
    raw = _expand(raw, environ, (), problems, used)
    if problems:
        raise ConfigError(path, problems)
    return raw, tuple(dict.fromkeys(used))


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
