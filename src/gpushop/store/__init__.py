"""The persistent store of gpushop: rentals, their event log, money, host blocklist, timings.

SQLite by default (``<user data dir>/gpushop.db``: WAL, busy timeout 10 s, foreign keys on),
PostgreSQL when the URL says so (``postgresql://`` is read as ``postgresql+psycopg://``).
:meth:`Store.open` migrates the schema to head with Alembic (``store/migrations``), safely when
several processes open the store at once.

**No secrets here.** The store never holds API keys, SSH private keys, HF tokens or any other
credential: no column is meant for one, and ``details`` / event data that look like one are
refused. ``host_key`` is the server's *public* host key. The URL itself may carry a database
password: it is never logged; show ``Store.url_for_display`` (password masked) instead.
"""

from gpushop.store.costs import accrued_cost, committed_cost
from gpushop.store.locks import LockBusy
from gpushop.store.records import Job, Rental, RentalEvent, Segment
from gpushop.store.spending import SpendingLimits, UserQuotaExceeded
from gpushop.store.store import CLAIMING_STATES, OfferClaimed, StaleState, Store
from gpushop.store.users import User

__all__ = [
    "CLAIMING_STATES",
    "Job",
    "LockBusy",
    "OfferClaimed",
    "Rental",
    "RentalEvent",
    "Segment",
    "SpendingLimits",
    "StaleState",
    "Store",
    "User",
    "UserQuotaExceeded",
    "accrued_cost",
    "committed_cost",
]
