"""Alembic environment and revisions of the store's schema (run by ``gpushop.store.migrate``)."""
