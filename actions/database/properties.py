"""Database-level state carried from the live database onto the recovery database at a swap.

A dump (or a copy out of a scratch cluster) brings back the data and the objects inside the
database, but `CREATE DATABASE` + `pg_restore` leaves behind what belongs to the database
itself: its owner, its ACL (a `REVOKE CONNECT ... FROM PUBLIC` is lost), `ALTER DATABASE ...
SET`, `ALTER ROLE ... IN DATABASE ... SET`, its comment and connection limit; and the
extension versions and default privileges come from the dump's time, not from now. A swap
must change the data and nothing else, so:

- `read_properties` reads all of it from the live database (shared catalogs, from the
  maintenance database) and `apply_properties` writes it onto the recovery database inside
  the swap's rename transaction, so either both the renames and the properties land or none.
  Settings are re-issued the way pg_dumpall does (src/bin/pg_dump/dumputils.c,
  makeAlterConfigCommand): list-valued settings such as search_path are split into their
  elements, each given as a literal.
- Extensions and default privileges live in each database's own catalogs, so
  `align_extensions` and `align_default_privileges` run on a connection to the recovery
  database before the swap; an extension that cannot be brought to the live version stops the
  swap with the reason, before anything is renamed.
- The ACL is rebuilt from `aclexplode` (every grant of the live database, grantable or not);
  grants are made by the bot's role, so their recorded grantor is the owner, as for grants a
  superuser makes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from actions.base import PermanentError
from actions.database.names import first_line

# GUCs flagged GUC_LIST_QUOTE in PostgreSQL 15 (src/backend/utils/misc/guc.c).
LIST_SETTINGS = frozenset(
    {
        "search_path",
        "temp_tablespaces",
        "session_preload_libraries",
        "shared_preload_libraries",
        "local_preload_libraries",
    }
)

OBJECT_KINDS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}


@dataclass(frozen=True)
class DatabaseProperties:
    """What belongs to a database itself, as read from the shared catalogs."""

    owner: str
    acl: tuple[tuple[str | None, str, bool], ...] | None
    """(grantee or None for PUBLIC, privilege, grantable); None: the default ACL."""
    settings: tuple[str, ...]
    role_settings: tuple[tuple[str, tuple[str, ...]], ...]
    comment: str | None
    connection_limit: int


def read_properties(pg: psycopg.Connection[Any], name: str) -> DatabaseProperties:
    """Read database `name`'s owner, ACL, settings, comment and connection limit."""
    row = pg.execute(
        "SELECT oid, pg_get_userbyid(datdba), datacl IS NULL, datconnlimit,"
        " shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    if row is None:
        raise PermanentError(f"database {name} does not exist")
    oid, owner, default_acl, limit, comment = row
    acl = None
    if not default_acl:
        acl = tuple(
            (grantee, privilege, grantable)
            for grantee, privilege, grantable in pg.execute(
                "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,"
                " a.privilege_type, a.is_grantable"
                " FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = %s"
                " ORDER BY 1 NULLS FIRST, 2",
                (oid,),
            ).fetchall()
        )
    settings: tuple[str, ...] = ()
    role_settings: list[tuple[str, tuple[str, ...]]] = []
    for role, config in pg.execute(
        "SELECT CASE WHEN setrole = 0 THEN NULL ELSE pg_get_userbyid(setrole) END, setconfig"
        " FROM pg_db_role_setting WHERE setdatabase = %s ORDER BY 1 NULLS FIRST",
        (oid,),
    ).fetchall():
        if role is None:
            settings = tuple(config)
        else:
            role_settings.append((role, tuple(config)))
    return DatabaseProperties(owner, acl, settings, tuple(role_settings), comment, limit)


def split_guc_list(value: str) -> list[str]:
    """Split a list-valued setting as SplitGUCList does: commas, double-quoted names."""
    items = re.findall(r'\s*("(?:[^"]|"")*"|[^,]*?)\s*(?:,|$)', value)
    elements = []
    for item in items:
        if item.startswith('"') and item.endswith('"') and len(item) >= 2:
            elements.append(item[1:-1].replace('""', '"'))
        elif item:
            elements.append(item)
    return elements


def setting_value(entry: str) -> tuple[str, sql.Composable]:
    """Turn a stored `name=value` into the name and the value as SET would take it."""
    name, _, value = entry.partition("=")
    if name.lower() in LIST_SETTINGS:
        parts = split_guc_list(value)
        return name, sql.SQL(", ").join(sql.Literal(p) for p in parts) if parts else sql.Literal("")
    return name, sql.Literal(value)


def _set(prefix: sql.Composable, entry: str) -> sql.Composed:
    name, value = setting_value(entry)
    return sql.SQL("{} SET {} = {}").format(prefix, sql.Identifier(name), value)


def _grant_target(grantee: str | None) -> sql.Composable:
    return sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)


def apply_properties(
    pg: psycopg.Connection[Any], name: str, wanted: DatabaseProperties
) -> list[str]:
    """Make database `name`'s own state equal `wanted` (run inside the swap transaction).

    Returns what was done, one line per kind, for the step output.
    """
    db = sql.Identifier(name)
    current = read_properties(pg, name)
    pg.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(wanted.owner)))
    pg.execute(
        sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
            db, sql.Literal(wanted.connection_limit)
        )
    )
    _apply_acl(pg, db, current, wanted)
    pg.execute(sql.SQL("ALTER DATABASE {} RESET ALL").format(db))
    for entry in wanted.settings:
        pg.execute(_set(sql.SQL("ALTER DATABASE {}").format(db), entry))
    for role, _ in current.role_settings:
        pg.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(sql.Identifier(role), db)
        )
    for role, entries in wanted.role_settings:
        prefix = sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), db)
        for entry in entries:
            pg.execute(_set(prefix, entry))
    pg.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(wanted.comment)))
    return [
        f"owner {wanted.owner}, connection limit {wanted.connection_limit}",
        "ACL " + ("default" if wanted.acl is None else f"{len(wanted.acl)} grant(s)"),
        f"{len(wanted.settings)} database setting(s), "
        f"{sum(len(e) for _, e in wanted.role_settings)} role-in-database setting(s)",
        "comment " + ("none" if wanted.comment is None else repr(wanted.comment)),
    ]


def _apply_acl(
    pg: psycopg.Connection[Any],
    db: sql.Identifier,
    current: DatabaseProperties,
    wanted: DatabaseProperties,
) -> None:
    if wanted.acl == current.acl:
        return
    if wanted.acl is None:
        # A NULL datacl means the built-in default: owner all, PUBLIC CONNECT and TEMPORARY.
        grants: tuple[tuple[str | None, str, bool], ...] = (
            (None, "CONNECT", False),
            (None, "TEMPORARY", False),
            *((wanted.owner, p, False) for p in ("CREATE", "CONNECT", "TEMPORARY")),
        )
    else:
        grants = wanted.acl
    holders = {None, wanted.owner, *(g for g, _, _ in current.acl or ())}
    for holder in holders:
        pg.execute(
            sql.SQL("REVOKE ALL ON DATABASE {} FROM {} CASCADE").format(db, _grant_target(holder))
        )
    for grantee, privilege, grantable in grants:
        pg.execute(
            sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege),
                db,
                _grant_target(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
        )


def extensions(pg: psycopg.Connection[Any]) -> dict[str, tuple[str, str]]:
    """Return the extensions installed in the connected database: name -> (version, schema)."""
    rows = pg.execute(
        "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e"
        " JOIN pg_namespace n ON n.oid = e.extnamespace"
    ).fetchall()
    return {name: (version, schema) for name, version, schema in rows}


def align_extensions(pg: psycopg.Connection[Any], wanted: dict[str, tuple[str, str]]) -> list[str]:
    """Create or update the connected database's extensions to the `wanted` versions."""
    done = []
    have = extensions(pg)
    for name, (version, schema) in sorted(wanted.items()):
        found = have.get(name)
        if found and found[0] == version:
            continue
        if found:
            statement = sql.SQL("ALTER EXTENSION {} UPDATE TO {}").format(
                sql.Identifier(name), sql.Literal(version)
            )
        else:
            statement = sql.SQL("CREATE EXTENSION {} WITH SCHEMA {} VERSION {}").format(
                sql.Identifier(name), sql.Identifier(schema), sql.Literal(version)
            )
        try:
            pg.execute(statement)
        except psycopg.Error as error:
            was = f"at {found[0]}" if found else "missing"
            raise PermanentError(
                f"extension {name} is {was} in the restored database and cannot be brought to "
                f"{version}, the live version: {first_line(error)}; nothing was renamed"
            ) from error
        done.append(f"extension {name} {found[0] if found else 'created'} -> {version}")
    return done


DefaultAcl = tuple[str, str, str, str | None, str, bool]
"""(role, schema or '', object kind, grantee or None for PUBLIC, privilege, grantable)."""

DEFAULT_ACL_QUERY = """
SELECT pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), d.defaclobjtype::text,
       CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
       a.privilege_type, a.is_grantable
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,
     aclexplode(d.defaclacl) a
ORDER BY 1, 2, 3, 4 NULLS FIRST, 5
"""


def default_privileges(pg: psycopg.Connection[Any]) -> list[DefaultAcl]:
    """Return the connected database's default privileges, one row per grant."""
    return [tuple(row) for row in pg.execute(DEFAULT_ACL_QUERY).fetchall()]


def _default_acl(row: DefaultAcl, grant: bool) -> sql.Composed:
    role, schema, kind, grantee, privilege, grantable = row
    where = sql.SQL(" IN SCHEMA {}").format(sql.Identifier(schema)) if schema else sql.SQL("")
    verb = "GRANT {} ON {} TO {}" if grant else "REVOKE {} ON {} FROM {}"
    return sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}{} " + verb + "{}").format(
        sql.Identifier(role),
        where,
        sql.SQL(privilege),
        sql.SQL(OBJECT_KINDS[kind]),
        _grant_target(grantee),
        sql.SQL(" WITH GRANT OPTION" if grant and grantable else ""),
    )


def align_default_privileges(pg: psycopg.Connection[Any], wanted: list[DefaultAcl]) -> list[str]:
    """Make the connected database's default privileges equal `wanted`."""
    have = default_privileges(pg)
    if have == wanted:
        return []
    try:
        with pg.transaction():
            for row in have:
                pg.execute(_default_acl(row, grant=False))
            for row in wanted:
                pg.execute(_default_acl(row, grant=True))
    except psycopg.Error as error:
        raise PermanentError(
            f"the live database's default privileges cannot be set on the restored one: "
            f"{first_line(error)}; nothing was renamed"
        ) from error
    return [f"default privileges: {len(wanted)} grant(s) as on the live database"]


@dataclass(frozen=True)
class DatabaseShape:
    """What CREATE DATABASE fixes for good: encoding, locale provider and locales, tablespace.

    These are what `pg_dump --create` puts in its CREATE DATABASE (PostgreSQL 15,
    src/bin/pg_dump/pg_dump.c, dumpDatabase: ENCODING, LOCALE_PROVIDER, LC_COLLATE and
    LC_CTYPE, ICU_LOCALE, ICU_RULES from 16, TABLESPACE when not the default); none can be
    changed once the database exists (ALTER DATABASE SET TABLESPACE moves files, with every
    session out), so the recovery database is created with them and a swap refuses one
    that differs. COLLATION_VERSION is left to the server: pg_dump writes it only in binary
    upgrade mode, and a new database's indexes are built under today's library.
    """

    encoding: str
    provider: str
    """'libc', 'icu' (PostgreSQL 15+) or 'builtin' (17+)."""
    collate: str
    ctype: str
    locale: str | None
    """The ICU locale (datlocale from 17, daticulocale before), or the builtin provider's."""
    icu_rules: str | None
    tablespace: str

    def line(self) -> str:
        """Describe the shape in one line, for step output and refusals."""
        said = f"{self.encoding}, {self.provider}"
        said += f" {self.locale}" if self.locale else ""
        said += f" (LC_COLLATE {self.collate}, LC_CTYPE {self.ctype})"
        said += f", ICU rules {self.icu_rules!r}" if self.icu_rules else ""
        return f"{said}, tablespace {self.tablespace}"


PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}


def read_shape(pg: psycopg.Connection[Any], name: str) -> DatabaseShape:
    """Read database `name`'s encoding, locale provider, locales and tablespace."""
    version = pg.info.server_version
    locale = "datlocale" if version >= 170000 else "daticulocale" if version >= 150000 else "NULL"
    provider = "datlocprovider" if version >= 150000 else "'c'"
    rules = "daticurules" if version >= 160000 else "NULL"
    row = pg.execute(
        sql.SQL(
            "SELECT pg_encoding_to_char(d.encoding), {}::text, d.datcollate, d.datctype, {}, {},"
            " t.spcname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace"
            " WHERE d.datname = %s"
        ).format(sql.SQL(provider), sql.SQL(locale), sql.SQL(rules)),
        (name,),
    ).fetchone()
    if row is None:
        raise PermanentError(f"database {name} does not exist")
    encoding, kind, collate, ctype, loc, icu_rules, tablespace = row
    return DatabaseShape(encoding, PROVIDERS[kind], collate, ctype, loc, icu_rules, tablespace)


def create_like(name: str, *, owner: str, shape: DatabaseShape) -> sql.Composed:
    """Return CREATE DATABASE `name` from template0 with `shape` (as pg_dump --create)."""
    options = [
        sql.SQL("TEMPLATE template0 OWNER {} ENCODING {}").format(
            sql.Identifier(owner), sql.Literal(shape.encoding)
        ),
        sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(shape.collate), sql.Literal(shape.ctype)
        ),
    ]
    if shape.provider != "libc":
        options.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(shape.provider)))
    if shape.provider == "icu" and shape.locale:
        options.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(shape.locale)))
    if shape.provider == "builtin" and shape.locale:
        options.append(sql.SQL("BUILTIN_LOCALE {}").format(sql.Literal(shape.locale)))
    if shape.icu_rules:
        options.append(sql.SQL("ICU_RULES {}").format(sql.Literal(shape.icu_rules)))
    options.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(shape.tablespace)))
    return sql.SQL("CREATE DATABASE {} ").format(sql.Identifier(name)) + sql.SQL(" ").join(options)
