"""Why a database cannot be opened, in one line an operator can act on.

Each line names where the database is (the SQLite file, or CHARBOT_DATABASE_URL with
its password hidden), what the database or its driver said, and what to do about it.
"""

from __future__ import annotations

from sqlalchemy.engine import URL

POSTGRES_EXTRA = "pip install 'charbot[postgres]'"  # what brings the bot's PostgreSQL driver

# What SQLite says -> what the operator should do about it.
SQLITE_FIXES = (
    (
        ("file is not a database", "malformed", "disk image"),
        "the file is damaged: restore it from a backup (charbot backup), or move it away "
        "and the bot starts with an empty one",
    ),
    (
        ("readonly", "read-only", "unable to open", "permission"),
        "the bot cannot write there: give its user write access to the file and its "
        "folder, or set CHARBOT_DATA_DIR to a writable folder",
    ),
)
# What a database server says (psycopg's messages) -> the fix; the first match wins.
SERVER_FIXES = (
    (
        ("refused", "no such file or directory", "resolve host", "timeout expired"),
        "cannot reach the server: start PostgreSQL, or correct the host and port in "
        "CHARBOT_DATABASE_URL",
    ),
    (
        ("password", "role", "authentication", "no pg_hba.conf entry"),
        "the server refused these credentials: correct the user and password in "
        "CHARBOT_DATABASE_URL (or the server's pg_hba.conf)",
    ),
    (
        ("permission denied",),
        "the bot's user may not create tables there: grant it CREATE on the schema, or "
        "make it the database's owner",
    ),
    (
        ("database",),
        "no such database: create it (createdb, owned by the bot's user) or correct "
        "its name in CHARBOT_DATABASE_URL",
    ),
)
UNKNOWN_FIX = "check that the database server is running and CHARBOT_DATABASE_URL is right"


class DatabaseFileError(RuntimeError):
    """The database cannot be opened or migrated; the message is one line with the fix."""


def where(url: URL) -> str:
    """The database as the operator gave it: the SQLite file, or the URL without password."""
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return f"CHARBOT_DATABASE_URL {url.render_as_string(hide_password=True)}"


def explain(url: URL, cause: str) -> str:
    """One line for a database that refused to open with `cause` (its driver's message)."""
    cause = _hide_password(url, " ".join(cause.split()) or "unknown error")
    sqlite = url.get_backend_name() == "sqlite"
    fixes = SQLITE_FIXES if sqlite else SERVER_FIXES
    fix = next((fix for words, fix in fixes if any(w in cause.lower() for w in words)), None)
    return f"{where(url)}: {cause}: {fix or UNKNOWN_FIX}"


def explain_missing_driver(url: URL, missing: str) -> str:
    """One line for a URL whose driver (the Python module `missing`) is not installed."""
    if missing.startswith("psycopg"):
        fix = f"install the PostgreSQL driver: {POSTGRES_EXTRA}"
    elif url.get_backend_name().startswith("postgres"):
        fix = f"install it, or write the URL as postgresql://... for psycopg 3 ({POSTGRES_EXTRA})"
    else:
        fix = "install it in the bot's Python environment"
    return f"{where(url)}: its driver {missing} is not installed: {fix}"


def _hide_password(url: URL, text: str) -> str:
    password = url.password
    return text.replace(str(password), "***") if password else text
