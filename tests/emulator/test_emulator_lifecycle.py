"""The life cycle over (simulated) time: provisioning, an image pull sized by the image and the
host's bandwidth, boot, running; cached images; restart. Time moves with the control clock."""

from __future__ import annotations

import httpx
import pytest
from emulator_ssh import cheapest, create, show

from gpushop.emulator import EmulatorThread
from gpushop.emulator.images import image_gb, pull_seconds


@pytest.fixture
def slow(emulator: EmulatorThread) -> EmulatorThread:
    """Real-time speed: the test moves the clock itself."""
    emulator.control.reset(speed=1.0)
    return emulator


def test_loading_time_follows_image_size_over_inet_down(
    slow: EmulatorThread, client: httpx.Client
) -> None:
    offer = cheapest(client, {"inet_down": {"lt": 500}})
    instance_id = create(client, offer["id"], image="ostris/aitoolkit:latest")
    view = slow.control.instance(instance_id)
    expected_pull = 15.0 * 8000 / offer["inet_down"]
    assert view["image_gb"] == 15.0
    assert view["pull_s"] == pytest.approx(expected_pull)
    assert view["boot_s"] == 20.0

    row = show(client, instance_id)
    assert row is not None and row["actual_status"] is None and row["ports"] == {}
    assert row["ssh_host"] == "127.0.0.1" and row["public_ipaddr"] == "127.0.0.1"
    assert isinstance(row["ssh_port"], int)

    slow.control.advance(3.0 + expected_pull / 2)  # provisioning done, half the pull
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "loading"
    assert row["status_msg"].startswith("Pulling image ostris/aitoolkit:latest: 4 of 9 layers")
    assert "/15.0 GB)" in row["status_msg"]
    assert (row["intended_status"], row["cur_state"], row["next_state"]) == ("running",) * 3

    slow.control.advance(expected_pull / 2 + 1.0)  # pulled, booting
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "loading"
    assert row["status_msg"].startswith("Status: Downloaded newer image")

    slow.control.advance(20.0)
    row = show(client, instance_id)
    assert row is not None and row["actual_status"] == "running"
    assert row["status_msg"] == "success, running ostris/aitoolkit_latest/ssh"
    assert row["ports"]["22/tcp"][0]["HostPort"] == str(row["ssh_port"])


def test_image_table() -> None:
    assert image_gb("ostris/aitoolkit:latest") == 15.0
    assert image_gb("pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime") == 8.0
    assert image_gb("pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel") == 12.0
    assert image_gb("vastai/base-image:@vastai-automatic-tag") == 4.0
    assert image_gb("docker.io/library/ubuntu:22.04") == 0.03
    assert image_gb("acme/unknown:1") == 5.0
    assert pull_seconds("acme/unknown", 1000.0) == 40.0


def test_bigger_images_and_slower_hosts_load_longer(
    slow: EmulatorThread, client: httpx.Client
) -> None:
    fast = cheapest(client, {"inet_down": {"gt": 5000}})
    slow_offer = cheapest(client, {"inet_down": {"lt": 300}})
    a = slow.control.instance(create(client, fast["id"], image="acme/app:1"))
    b = slow.control.instance(create(client, slow_offer["id"], image="acme/app:1"))
    assert a["pull_s"] < b["pull_s"]
    c = slow.control.instance(create(client, cheapest(client)["id"], image="alpine:3"))
    assert c["pull_s"] < 1.0


def test_cached_image_and_restart_only_boot(slow: EmulatorThread, client: httpx.Client) -> None:
    offer = cheapest(client)
    first = create(client, offer["id"], image="acme/app:1")
    slow.control.advance(3.0 + slow.control.instance(first)["pull_s"] + 20.0)
    assert show(client, first)["actual_status"] == "running"  # type: ignore[index]

    client.put(f"/api/v0/instances/{first}/", json={"state": "stopped"})
    client.put(f"/api/v0/instances/{first}/", json={"state": "running"})
    row = show(client, first)
    assert row is not None and row["actual_status"] == "loading"  # no provisioning phase
    assert row["status_msg"] == "Status: Image is up to date for acme/app:1, starting container"
    assert slow.control.instance(first)["pull_s"] == 0.0

    client.delete(f"/api/v0/instances/{first}/")
    again = create(client, offer["id"], image="acme/app:2")  # same machine, same repository
    assert slow.control.instance(again)["pull_s"] == 0.0


def test_speed_divides_every_delay(emulator: EmulatorThread, client: httpx.Client) -> None:
    emulator.control.reset(speed=4.0, boot_delay_s=5.0)
    offer = cheapest(client, {"inet_down": {"gt": 2000}})
    instance_id = create(client, offer["id"], image="alpine:3")
    view = emulator.control.instance(instance_id)
    total = (3.0 + view["pull_s"] + 5.0) / 4.0  # provisioning + pull + boot, 4 times faster
    # on the emulator's clock (the wall's only adds milliseconds to a margin of 0.5 s)
    emulator.control.advance(total - 0.5)
    assert show(client, instance_id)["actual_status"] == "loading"  # type: ignore[index]
    emulator.control.advance(1.0)
    assert show(client, instance_id)["actual_status"] == "running"  # type: ignore[index]


def test_clock_never_goes_back(emulator: EmulatorThread) -> None:
    from gpushop.emulator.control import EmulatorControlError

    assert emulator.control.advance(10.0) == 10.0
    assert emulator.control.set_now_offset(25.0) == 25.0
    with pytest.raises(EmulatorControlError):
        emulator.control.set_now_offset(5.0)
