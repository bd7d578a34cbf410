"""Storage: the Database (atomic units, group commit on SQLite), schema and accounts."""

from .accounts import Accounts, accounts
from .database import Database, Row, Tx, Unit
from .schema import Migration, Migrations, SchemaStatus, current_versions, upgrade

__all__ = [
    "Accounts",
    "Database",
    "Migration",
    "Migrations",
    "Row",
    "SchemaStatus",
    "Tx",
    "Unit",
    "accounts",
    "current_versions",
    "upgrade",
]
