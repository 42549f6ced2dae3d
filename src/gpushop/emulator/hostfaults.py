"""Host and instance faults: what goes wrong on the machine rather than on the HTTP call.

Posted to `POST /_emulator/faults` like endpoint faults, but with one of HOST_KINDS and a target:

- `instance_id`: applied at once to that existing instance;
- `offer_id` / `machine_id`: applied to the next `count` instances created on that offer / machine;
- neither: applied to the next `count` instances created anywhere.

`offer_taken` with an `offer_id` takes the offer away at once (another renter got it).
Time-based kinds (`offline`, `outbid`) fire `after_s` simulated seconds (divided by speed) after
they are applied: at creation for the create-targeted ones, at once otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gpushop.emulator.faults import FaultError

HOST_KINDS = (
    "stuck_loading",  # loading forever (the pull stalls)
    "oci_error",  # actual_status "created", an OCI runtime error in status_msg, never runs
    "offline",  # actual_status "offline" (host disconnected), SSH gone
    "create_stopped",  # create answers 200 success:false + new_contract; the instance is stopped
    "destroy_ignored",  # DELETE answers success but the instance stays until `times` more
    "offer_taken",  # the create finds the offer gone: 404 no_such_ask
    "outbid",  # interruptible instance stopped: cur/intended/next "stopped", actual "exited"
    "lying_host",  # nvidia-smi reports other GPUs than the offer advertised
)
LIE_FIELDS = ("gpu_name", "num_gpus", "gpu_ram", "cuda", "driver_version")

OCI_ERROR = (
    "Error response from daemon: failed to create task for container: failed to create shim "
    "task: OCI runtime create failed: runc create failed: unable to start container process: "
    "error during container init: error running hook #0: error running hook: exit status 1, "
    "stdout: , stderr: Auto-detected mode as 'legacy'\nnvidia-container-cli: requirement error: "
    "unsatisfied condition: cuda>=13.0, please update your driver to a newer version, or use an "
    "earlier cuda container: unknown"
)


@dataclass
class HostFault:
    kind: str
    instance_id: int | None = None
    offer_id: int | None = None
    machine_id: int | None = None
    count: int = 1
    after_s: float = 0.0
    times: int = 1  # destroy_ignored: how many destroys do not take
    message: str | None = None  # oci_error: the status_msg to show
    lie: dict[str, Any] = field(default_factory=dict)  # lying_host: LIE_FIELDS

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostFault:
        kind = data.get("kind")
        if kind not in HOST_KINDS:
            raise FaultError(f"kind must be one of {', '.join(HOST_KINDS)}")
        ids: dict[str, int | None] = {}
        for name in ("instance_id", "offer_id", "machine_id"):
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise FaultError(f"{name} must be an integer")
            ids[name] = value
        if sum(v is not None for v in ids.values()) > 1:
            raise FaultError("give at most one of instance_id, offer_id, machine_id")
        count, times = data.get("count", 1), data.get("times", 1)
        for name, value in (("count", count), ("times", times)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FaultError(f"{name} must be an integer >= 1")
        after = data.get("after_s", 0.0)
        if isinstance(after, bool) or not isinstance(after, int | float) or after < 0:
            raise FaultError("after_s must be a number >= 0")
        message = data.get("message")
        if message is not None and not isinstance(message, str):
            raise FaultError("message must be a string")
        lie = {k: data[k] for k in LIE_FIELDS if data.get(k) is not None}
        if kind == "lying_host":
            _check_lie(lie)
        elif lie:
            raise FaultError(f"{', '.join(lie)} only apply to kind lying_host")
        if kind == "offer_taken" and (ids["instance_id"] or ids["machine_id"]):
            raise FaultError("offer_taken targets an offer_id (or the next create)")
        return cls(
            kind=kind,
            count=count,
            after_s=float(after),
            times=times,
            message=message,
            lie=lie,
            **ids,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, offer_id: int, machine_id: int, is_bid: bool) -> bool:
        """Whether a create on this offer consumes the fault (outbid waits for a bid)."""
        if self.kind == "outbid" and not is_bid:
            return False
        if self.offer_id is not None:
            return self.offer_id == offer_id
        if self.machine_id is not None:
            return self.machine_id == machine_id
        return True


def _check_lie(lie: dict[str, Any]) -> None:
    if not lie:
        raise FaultError(f"lying_host needs at least one of {', '.join(LIE_FIELDS)}")
    for name in ("num_gpus", "gpu_ram"):
        value = lie.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise FaultError(f"{name} must be an integer")
        if name == "num_gpus" and value is not None and not 1 <= value <= 16:
            raise FaultError("num_gpus must be between 1 and 16")
    cuda = lie.get("cuda")
    if cuda is not None:
        try:
            float(cuda)
        except (TypeError, ValueError):
            raise FaultError("cuda must be a version number such as 12.2") from None
    for name in ("gpu_name", "driver_version"):
        if name in lie and not isinstance(lie[name], str):
            raise FaultError(f"{name} must be a string")
