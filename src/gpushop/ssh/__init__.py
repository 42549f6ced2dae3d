"""SSH to rented instances (asyncssh): keys, readiness probes, commands."""
