"""Host faults of the TensorDock side (`POST /_emulator/tensordock/faults`).

Target one VM (`vm_id`: applied at once), the next `count` creates on a hostnode
(`hostnode_id`), or the next `count` creates anywhere (no target). Time-based kinds fire
`after_s` simulated seconds (divided by speed) after they are applied.

- `stuck_provisioning`: the VM never boots (no IP on a first deploy, `starting` for ever after a
  start); it bills all the same.
- `host_offline`: the host drops off the network: SSH is gone and its processes die, while the API
  still says `running` and billing goes on (the API cannot tell).
- `gpu_reclaimed`: a low-tier host takes its GPU back: the VM becomes `stoppeddisassociated`
  (storage billed only) and its GPUs go to another renter, so a restart finds no GPU.
- `destroy_ignored`: DELETE answers success but the VM stays until `times` more deletes.
- `gpu_taken`: other renters take the GPUs: of the VM's model on its hostnode at once (`vm_id`:
  its restart then fails), or on the hostnode a create picked, just before its capacity check
  (the listing showed them; the create answers "No available nodes...").
- `lying_host`: nvidia-smi reports other GPUs (`gpu_name`, `num_gpus`, `gpu_ram` MiB, `cuda`,
  `driver_version`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gpushop.emulator.faults import FaultError
from gpushop.emulator.hostfaults import LIE_FIELDS

TD_KINDS = (
    "stuck_provisioning",
    "host_offline",
    "gpu_reclaimed",
    "destroy_ignored",
    "gpu_taken",
    "lying_host",
)


@dataclass
class TdHostFault:
    kind: str
    vm_id: str | None = None
    hostnode_id: str | None = None
    count: int = 1
    after_s: float = 0.0
    times: int = 1
    lie: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> TdHostFault:
        if not isinstance(data, dict):
            raise FaultError("fault must be a JSON object")
        kind = data.get("kind")
        if kind not in TD_KINDS:
            raise FaultError(f"kind must be one of {', '.join(TD_KINDS)}")
        known = {"kind", "vm_id", "hostnode_id", "count", "after_s", "times", *LIE_FIELDS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FaultError(f"unknown fields: {', '.join(unknown)}")
        vm_id, node_id = data.get("vm_id"), data.get("hostnode_id")
        for name, value in (("vm_id", vm_id), ("hostnode_id", node_id)):
            if value is not None and not isinstance(value, str):
                raise FaultError(f"{name} must be a string")
        if vm_id is not None and node_id is not None:
            raise FaultError("give at most one of vm_id, hostnode_id")
        count, times = data.get("count", 1), data.get("times", 1)
        for name, value in (("count", count), ("times", times)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FaultError(f"{name} must be an integer >= 1")
        after = data.get("after_s", 0.0)
        if isinstance(after, bool) or not isinstance(after, int | float) or after < 0:
            raise FaultError("after_s must be a number >= 0")
        lie = {k: data[k] for k in LIE_FIELDS if data.get(k) is not None}
        if kind == "lying_host":
            if not lie:
                raise FaultError(f"lying_host needs at least one of {', '.join(LIE_FIELDS)}")
            num = lie.get("num_gpus")
            if num is not None and (isinstance(num, bool) or not isinstance(num, int)):
                raise FaultError("num_gpus must be an integer")
        elif lie:
            raise FaultError(f"{', '.join(lie)} only apply to kind lying_host")
        return cls(kind, vm_id, node_id, count, float(after), times, lie)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, node_id: str) -> bool:
        return self.hostnode_id is None or self.hostnode_id == node_id
