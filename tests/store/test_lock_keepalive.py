"""The reconcile lock on PostgreSQL is a session lock: it lasts as long as the server believes the
holder's connection alive. The lock's session probes with TCP keepalives, so a holder whose host
vanished (no FIN, no RST) loses the lock within about a minute, not after Linux's 2 h 11 min
(issue 10 §3c)."""

from __future__ import annotations

from sqlalchemy import text

from gpushop.store import Store


def test_the_lock_session_has_keepalives_that_drop_a_vanished_holder_within_a_minute(
    pg_url: str,
) -> None:
    names = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
    with Store.open(pg_url) as store, store.reconcile_lock() as conn:
        assert conn is not None  # PostgreSQL: the lock's own session
        # over TCP the server reports what the socket really uses (getsockopt), not a wish
        shown = {
            name: int(
                conn.execute(
                    text(f"SELECT setting FROM pg_settings WHERE name = '{name}'")
                ).scalar_one()
            )
            for name in (*names, "tcp_user_timeout")
        }
    idle, interval, count = (shown[n] for n in names)
    assert 0 < idle + interval * count <= 60  # seconds until an idle dead peer is given up
    assert 0 < shown["tcp_user_timeout"] <= 60_000  # ms, also while data waits for an ACK
