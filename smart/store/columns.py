"""Column types of the facade's tables that must hold 64-bit integers on every backend.

PostgreSQL's ``INTEGER`` is 32 bits: epoch seconds after 2038-01-19 03:14:07 UTC (2**31 - 1),
and row ids beyond 2**31 - 1, do not fit; ``BIGINT`` holds both. SQLite stores any integer of a
column of INTEGER affinity in up to 8 bytes whatever its declared type ("Datatypes In SQLite"
§2, §3.1), so these types stay ``INTEGER`` there:

- only ``INTEGER PRIMARY KEY`` is the autoincremented rowid ("CREATE TABLE", "ROWIDs and the
  INTEGER PRIMARY KEY"); a ``BIGINT PRIMARY KEY`` would need every insert to give its id;
- a database made by the migrations, by ``create_all`` and by any release before them declares
  the same type, so Alembic's ``compare_metadata`` has nothing to explain away on SQLite, and
  revision 0005 has nothing to copy there.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Integer

#: Seconds since the epoch (UTC): ``BIGINT`` on PostgreSQL, ``INTEGER`` (64-bit) on SQLite.
EpochSeconds = BigInteger().with_variant(Integer(), "sqlite")

#: An autoincremented row id of a table that may see more than 2**31 rows over its life (its
#: rows are pruned, its ids are not reused): ``BIGSERIAL`` on PostgreSQL, the rowid on SQLite.
BigRowId = BigInteger().with_variant(Integer(), "sqlite")

__all__ = ["EpochSeconds", "BigRowId"]
