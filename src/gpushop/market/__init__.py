"""Shopping: filtering, ranking and market statistics over provider-neutral offers."""
