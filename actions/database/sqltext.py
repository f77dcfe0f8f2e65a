"""Migration scripts read as text: their statements, and which cannot run in a transaction.

PostgreSQL refuses some statements inside a transaction block, and a simple-query message
holding several statements is one implicit transaction block (PostgreSQL docs, protocol-flow
"Multiple Statements in a Simple Query"), so where a script runs decides whether it can run
at all. The list is Flyway's, which detects the same statements to run a migration outside a
transaction (flyway-core .../database/postgresql/PostgreSQLParser.java,
detectCanExecuteInTransaction), plus REINDEX CONCURRENTLY, ALTER DATABASE SET TABLESPACE,
CLUSTER without a table and COMMIT/ROLLBACK PREPARED, which PostgreSQL refuses too
(PreventInTransactionBlock in their commands). ALTER TYPE ... ADD VALUE is refused only
before PostgreSQL 12.

The reading is textual: comments, quoted strings and dollar-quoted bodies are blanked before
splitting on `;`, so a function body never counts as statements.
"""

from __future__ import annotations

import re

NON_TRANSACTIONAL = [
    re.compile(r"^(CREATE|DROP)( UNIQUE)? INDEX CONCURRENTLY\b"),
    re.compile(r"^REINDEX\b.*\bCONCURRENTLY\b"),
    re.compile(r"^REINDEX( \(.*?\))?( VERBOSE)? (SCHEMA|DATABASE|SYSTEM)\b"),
    re.compile(r"^VACUUM\b"),
    re.compile(r"^(CREATE|DROP) (DATABASE|TABLESPACE|SUBSCRIPTION)\b"),
    re.compile(r"^ALTER SYSTEM\b"),
    re.compile(r"^ALTER DATABASE \S+ SET TABLESPACE\b"),
    re.compile(r"^DISCARD ALL\b"),
    re.compile(r"^CLUSTER( VERBOSE)?$"),
    re.compile(r"^(COMMIT|ROLLBACK) PREPARED\b"),
]
ADD_ENUM_VALUE = re.compile(r"^ALTER TYPE\b.*\bADD VALUE\b")
TRANSACTION_CONTROL = re.compile(
    r"^(BEGIN|START TRANSACTION|COMMIT|END|ROLLBACK|ABORT)\b(?! PREPARED)"
)


def _blank(script: str) -> str:
    """Blank comments, quoted strings and dollar-quoted bodies, keeping every offset."""

    def spaces(match: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", match.group(0))

    def empty_string(match: re.Match[str]) -> str:
        return "''" + spaces(match)[2:]

    text = re.sub(r"--[^\n]*", spaces, script)
    text = re.sub(r"/\*.*?\*/", spaces, text, flags=re.DOTALL)
    text = re.sub(r"\$(\w*)\$.*?\$\1\$", empty_string, text, flags=re.DOTALL)
    return re.sub(r"'(?:[^']|'')*'", empty_string, text)


def _spans(script: str) -> list[tuple[int, int]]:
    blanked = _blank(script)
    spans, start = [], 0
    for end in [m.start() for m in re.finditer(";", blanked)] + [len(blanked)]:
        if blanked[start:end].strip():
            spans.append((start, end))
        start = end + 1
    return spans


def split(script: str) -> list[str]:
    """The script's statements as written, for running them one at a time."""
    return [script[a:b].strip() for a, b in _spans(script)]


def statements(script: str) -> list[str]:
    """Split SQL into statements (comments and string bodies removed), upper-cased, one line."""
    blanked = _blank(script)
    return [" ".join(blanked[a:b].split()).upper() for a, b in _spans(script)]


def outside_transaction(script: str, *, server_version: int) -> list[str]:
    """The statements PostgreSQL `server_version` (e.g. 150004) refuses in a transaction."""
    found = []
    for statement in statements(script):
        refused = any(p.match(statement) for p in NON_TRANSACTIONAL) or (
            server_version < 120000 and ADD_ENUM_VALUE.match(statement) is not None
        )
        if refused:
            found.append(statement[:120])
    return found


def controls_transaction(script: str) -> bool:
    """Whether the script begins or ends transactions itself (BEGIN; ... COMMIT;)."""
    return any(TRANSACTION_CONTROL.match(s) for s in statements(script))
