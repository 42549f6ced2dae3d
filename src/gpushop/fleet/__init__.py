"""Rentals: provision, wait until ready, release, reconcile. Provider-neutral."""
