"""Storage: the Database (atomic units, group commit on SQLite), schema and accounts."""

from .accounts import AccountMissing, Accounts, accounts
from .database import Database, Row, Tx, Unit
from .results import CasResult, Outcome
from .schema import Migration, Migrations, SchemaStatus, current_versions, upgrade

__all__ = [
    "AccountMissing",
    "Accounts",
    "CasResult",
    "Database",
    "Migration",
    "Migrations",
    "Outcome",
    "Row",
    "SchemaStatus",
    "Tx",
    "Unit",
    "accounts",
    "current_versions",
    "upgrade",
]
