"""Provider adapters: one package per marketplace, behind the ``Provider`` protocol."""
