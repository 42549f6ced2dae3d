"""A small synchronous client for the emulator's control API (`/_emulator/...`)."""

from __future__ import annotations

from typing import Any

import httpx


class EmulatorControlError(RuntimeError):
    """The control API refused a request (bad override, bad fault spec)."""


class EmulatorControl:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        # a fresh connection per call: a kept-alive one may be closed by the server (idle
        # timeout) just as a call goes out, which fails that call with no answer
        self._client = httpx.Client(
            base_url=self.url + "/_emulator",
            timeout=30.0,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        response = self._client.request(method, path, json=json)
        if response.status_code >= 400:
            try:
                msg = response.json().get("msg", response.text)
            except ValueError:
                msg = response.text
            raise EmulatorControlError(f"{method} /_emulator/{path}: {msg}")
        return response.json()

    def reset(self, **overrides: Any) -> None:
        """Back to the seeded initial state; overrides apply on top of the start-up config
        (offers, seed, rate_limit, speed, provision_delay_s, loading_delay_s, retry_after,
        legacy_list_deprecated, credit, api_key) until the next reset."""
        self._call("POST", "reset", overrides)

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "state")
        return result

    def fault(
        self,
        endpoint: str,
        kind: str,
        *,
        status: int | None = None,
        count: int = 1,
        latency_s: float = 0.0,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Make the next `count` calls of `endpoint` ("METHOD /template/" or "*") fail.

        kind: "status" (answer `status` without acting), "quota" (daily search quota 429),
        "latency" (sleep `latency_s`, then act), "drop" (act, then break the connection).
        """
        spec = {
            "endpoint": endpoint,
            "kind": kind,
            "status": status,
            "count": count,
            "latency_s": latency_s,
            "body": body,
            "headers": headers or {},
        }
        self._call("POST", "faults", spec)

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def request_count(self, endpoint: str) -> int:
        counts: dict[str, int] = self.state()["request_counts"]
        return int(counts.get(endpoint, 0))

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "requests")["requests"]
        return result

    # -- instances, time and host faults (docs/emulator.md, "Host faults") ---------------------
    def instance(self, instance_id: int) -> dict[str, Any]:
        """Control-side view of an instance: status, sandbox path, ssh port and host key,
        process groups, faults and billing figures."""
        result: dict[str, Any] = self._call("GET", f"instances/{instance_id}")
        return result

    def advance(self, seconds: float) -> float:
        """Move simulated time forward by `seconds` (life cycle, billing, durations); returns
        the total offset from the wall clock."""
        return float(self._call("POST", "clock", {"advance": seconds})["offset"])

    def set_now_offset(self, seconds: float) -> float:
        """Put simulated time `seconds` ahead of the wall clock (never less than now)."""
        return float(self._call("POST", "clock", {"offset": seconds})["offset"])

    def host_fault(
        self,
        kind: str,
        *,
        instance_id: int | None = None,
        offer_id: int | None = None,
        machine_id: int | None = None,
        count: int = 1,
        after_s: float = 0.0,
        **params: Any,
    ) -> dict[str, Any]:
        """Post a host fault (kinds in hostfaults.HOST_KINDS). Target one existing instance
        (`instance_id`, applied now), or the next `count` creates on `offer_id`, on
        `machine_id`, or anywhere (no target)."""
        spec: dict[str, Any] = {"kind": kind, "count": count, "after_s": after_s, **params}
        for name, value in (
            ("instance_id", instance_id),
            ("offer_id", offer_id),
            ("machine_id", machine_id),
        ):
            if value is not None:
                spec[name] = value
        result: dict[str, Any] = self._call("POST", "faults", spec)["fault"]
        return result

    def stuck_loading(self, **target: Any) -> dict[str, Any]:
        """The instance stays `loading` for ever (the pull stalls)."""
        return self.host_fault("stuck_loading", **target)

    def oci_error(self, message: str | None = None, **target: Any) -> dict[str, Any]:
        """After loading, `actual_status` "created" with an OCI runtime error; never runs."""
        if message is not None:
            target["message"] = message
        return self.host_fault("oci_error", **target)

    def host_offline(self, after_s: float = 0.0, **target: Any) -> dict[str, Any]:
        """`actual_status` "offline" from `after_s` simulated seconds on; SSH goes away."""
        return self.host_fault("offline", after_s=after_s, **target)

    def create_stopped(self, **target: Any) -> dict[str, Any]:
        """The next create answers 200 `success: false` + `new_contract`; the instance is made
        stopped (billing storage) and refuses to start (`resources_unavailable`)."""
        return self.host_fault("create_stopped", **target)

    def destroy_ignored(self, times: int = 1, **target: Any) -> dict[str, Any]:
        """DELETE answers success but the instance stays until `times` more destroys."""
        return self.host_fault("destroy_ignored", times=times, **target)

    def offer_taken(self, offer_id: int | None = None, count: int = 1) -> dict[str, Any]:
        """Another renter takes `offer_id` now (or the offer of each of the next `count`
        creates): the create gets 404 `no_such_ask`."""
        return self.host_fault("offer_taken", offer_id=offer_id, count=count)

    def outbid(self, after_s: float = 0.0, **target: Any) -> dict[str, Any]:
        """An interruptible instance is outbid: cur/intended/next "stopped", actual "exited"."""
        return self.host_fault("outbid", after_s=after_s, **target)

    def lying_host(
        self,
        *,
        gpu_name: str | None = None,
        num_gpus: int | None = None,
        gpu_ram: int | None = None,
        cuda: float | str | None = None,
        driver_version: str | None = None,
        **target: Any,
    ) -> dict[str, Any]:
        """nvidia-smi reports these instead of what the offer advertised (gpu_ram in MB/MiB)."""
        lie: dict[str, Any] = {
            "gpu_name": gpu_name,
            "num_gpus": num_gpus,
            "gpu_ram": gpu_ram,
            "cuda": cuda,
            "driver_version": driver_version,
        }
        return self.host_fault(
            "lying_host", **{k: v for k, v in lie.items() if v is not None}, **target
        )

    # -- the simulated ai-toolkit and SSH drops (docs/emulator.md, "Trainer faults") -----------
    def trainer_fault(self, instance_id: int, fail: str, at_step: int) -> dict[str, Any]:
        """The instance's ai-toolkit trainer meets `fail` when it reaches step `at_step` (once):
        "oom" or "crash" end it there (exit 1, a realistic message); "ssh_drop" aborts every
        SSH connection of the instance while training goes on."""
        spec = {"instance_id": instance_id, "fail": fail, "at_step": at_step}
        result: dict[str, Any] = self._call("POST", "trainer_fault", spec)["fault"]
        return result

    def drop_ssh(self, instance_id: int) -> int:
        """Abort every SSH connection of the instance now (new ones are accepted); returns
        how many were dropped."""
        return int(self._call("POST", "drop_ssh", {"instance_id": instance_id})["dropped"])

    # -- TensorDock (docs/emulator.md, "TensorDock") -----------------------------------------
    def tensordock_state(self) -> dict[str, Any]:
        """The TensorDock organization: `balance`, `spend`, `hourly_cost`, `vms` (control
        views), `deleted`, `secrets`, pending `faults`, GPUs `taken` by other renters,
        `gpu_names`, `request_counts` of the TensorDock endpoints."""
        result: dict[str, Any] = self._call("GET", "tensordock/state")
        return result

    def tensordock_vm(self, vm_id: str) -> dict[str, Any]:
        """Control-side view of a VM: status, booted/reachable, hostnode, resources, ports,
        `ssh_host`/`ssh_port`/`ssh_user`, `sandbox`, `ssh_listening`, `ssh_host_key`,
        `process_groups`, `cloud_init` (running/done/error), faults and `billing`
        (`rate_hourly`, `storage_rate`, `current_rate`, `cost`)."""
        result: dict[str, Any] = self._call("GET", f"tensordock/vms/{vm_id}")
        return result

    def tensordock_fault(
        self,
        kind: str,
        *,
        vm_id: str | None = None,
        hostnode_id: str | None = None,
        count: int = 1,
        after_s: float = 0.0,
        **params: Any,
    ) -> dict[str, Any]:
        """A TensorDock host fault (tensordock/faults.py: stuck_provisioning, host_offline,
        gpu_reclaimed, destroy_ignored, gpu_taken, lying_host) on one VM (`vm_id`, at once),
        on the next `count` creates on `hostnode_id`, or on the next creates anywhere."""
        spec: dict[str, Any] = {"kind": kind, "count": count, "after_s": after_s, **params}
        if vm_id is not None:
            spec["vm_id"] = vm_id
        if hostnode_id is not None:
            spec["hostnode_id"] = hostnode_id
        result: dict[str, Any] = self._call("POST", "tensordock/faults", spec)["fault"]
        return result

    def tensordock_trainer_fault(self, vm_id: str, fail: str, at_step: int) -> dict[str, Any]:
        """As `trainer_fault`, for the simulated ai-toolkit running on a TensorDock VM (also
        inside the simulated docker's containers)."""
        spec = {"vm_id": vm_id, "fail": fail, "at_step": at_step}
        result: dict[str, Any] = self._call("POST", "tensordock/trainer_fault", spec)["fault"]
        return result

    def tensordock_drop_ssh(self, vm_id: str) -> int:
        """Abort every SSH connection of the VM now; returns how many were dropped."""
        return int(self._call("POST", "tensordock/drop_ssh", {"vm_id": vm_id})["dropped"])
