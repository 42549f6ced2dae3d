"""The official `vastai` CLI 1.9.1, unchanged, through reboot, recycle, change bid, execute and
show invoices against the emulator (skipped when the CLI is not installed)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from emulator_ssh import (
    all_gone,
    cheapest,
    create,
    lasting,
    new_key,
    register,
    show,
    ssh_run,
    wait_status,
    wait_until,
)

from gpushop.emulator import EmulatorThread

pytestmark = pytest.mark.vastai_cli


def vastai(cli: str, emu: EmulatorThread, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VAST_URL": emu.url, "VASTAI_NO_UPDATE_CHECK": "1"}
    return subprocess.run(
        [cli, "--url", emu.url, "--api-key", emu.api_key, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.slow
def test_reboot_recycle_change_bid_execute_and_invoices(
    vastai_cli: str, emulator: EmulatorThread, client: httpx.Client
) -> None:
    emulator.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
    key = new_key()
    register(client, key)
    offer = cheapest(client)
    min_bid = offer["min_bid"]
    instance_id = create(client, offer["id"], price=round(min_bid * 1.2, 4))
    port = wait_status(client, instance_id, "running")["ssh_port"]
    iid = str(instance_id)

    # reboot: the processes end, the files stay
    ssh_run(port, key, "echo kept > /workspace/file; setsid sleep infinity >/dev/null 2>&1 &")
    pids = lasting(lambda: emulator.control.instance(instance_id), 1)
    rebooted = vastai(vastai_cli, emulator, "reboot", "instance", iid)
    assert rebooted.stdout.strip() == f"Rebooting instance {iid}.", rebooted.stderr
    assert all_gone(pids)
    wait_status(client, instance_id, "running")
    assert ssh_run(port, key, "cat /workspace/file").stdout == "kept\n"

    # recycle: a fresh container, the files gone
    recycled = vastai(vastai_cli, emulator, "recycle", "instance", iid)
    assert recycled.stdout.strip() == f"Recycling instance {iid}.", recycled.stderr
    wait_status(client, instance_id, "running")
    assert ssh_run(port, key, "ls /workspace").stdout == ""

    # change bid: below min_bid the instance is outbid (stopped)
    ssh_run(port, key, "echo junk > /workspace/junk")
    low = vastai(vastai_cli, emulator, "change", "bid", iid, "--price", f"{min_bid / 2:.4f}")
    assert "Per gpu bid price changed" in low.stdout, low.stderr
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "exited"

    # execute on the stopped instance: rm takes effect; the CLI fetched the result_url (1.9.1
    # then trips over its own bug, reference section 2 quirk 10: only after a successful poll)
    executed = vastai(vastai_cli, emulator, "execute", iid, "rm /workspace/junk")
    assert "'str' object has no attribute 'get'" in executed.stderr, executed.stderr
    sandbox = Path(emulator.control.instance(instance_id)["sandbox"])
    assert wait_until(lambda: not (sandbox / "workspace" / "junk").exists())
    refused = vastai(vastai_cli, emulator, "execute", iid, "cat /etc/passwd")
    assert "Invalid command." in refused.stderr

    # a winning bid again: it runs
    high = f"{min_bid * 1.5:.4f}"
    assert (
        "Per gpu bid price changed"
        in vastai(vastai_cli, emulator, "change", "bid", iid, "--price", high).stdout
    )
    assert wait_status(client, instance_id, "running")["dph_base"] == pytest.approx(float(high))

    # show invoices for the last day up to an hour from now: the instance's charges
    emulator.control.advance(3600)
    now = datetime.now(UTC)
    span = ("-s", f"{now - timedelta(days=1):%Y-%m-%dT%H:%M:%S+00:00}")
    span += ("-e", f"{now + timedelta(hours=2):%Y-%m-%dT%H:%M:%S+00:00}")
    shown = vastai(vastai_cli, emulator, "show", "invoices", *span, "--raw")
    rows = json.loads(shown.stdout)
    assert {row["instance_id"] for row in rows if row["type"] == "charge"} == {instance_id}
    table = vastai(vastai_cli, emulator, "show", "invoices", *span)
    assert "Total: $" in table.stdout and "Traceback" not in table.stderr
