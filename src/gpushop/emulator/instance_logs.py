"""`PUT /api/v0/instances/request_logs/{id}/` (reference section 7): the container's log.

Body `{"tail": "1000", "filter": "text", "daemon_logs": "true"}`, every field optional (`tail` a
string of digits, or a number; default 1000 lines). The answer is `{"success": true,
"result_url": URL, "msg": ...}`; the text is at that URL at once (results.py: a plain GET
without auth, as the official CLI polls it). What the text is: container_log.py. An unknown
instance (or an id that is not a number) answers 404 `{"error": "invalid_id", "msg": "Invalid
instance id."}`; a `tail` that is not a count, or a `filter` that is not a string, 400
`invalid_args`. There is one account, so OAPI's 403 `not_authorized` (someone else's instance)
cannot happen. No documented rate limit, none here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpushop.emulator import container_log, entrypoint
from gpushop.emulator.api import Call, Handler, Reply
from gpushop.emulator.errors import ApiError, invalid_args

if TYPE_CHECKING:
    from gpushop.emulator.app import Emulator

INVALID_ID = {"error": "invalid_id", "msg": "Invalid instance id."}
DEFAULT_TAIL = 1000
LOGS_MSG = "Logs are being uploaded, wait a few seconds and then view the result_url"
TRUE = ("true", "1", "yes")


def _tail(raw: Any) -> int:
    if raw is None or raw == "":
        return DEFAULT_TAIL
    if isinstance(raw, bool):
        raise invalid_args("tail must be a number of lines")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        value = int(raw.strip())
    else:
        raise invalid_args("tail must be a number of lines")
    if value < 0:
        raise invalid_args("tail must be a number of lines")
    return value


def request_logs(emu: Emulator, call: Call) -> Reply:
    try:
        instance_id = int(call.params["id"])
    except ValueError:
        raise ApiError(404, dict(INVALID_ID)) from None
    inst = emu.state.instances.get(instance_id)
    if inst is None:
        raise ApiError(404, dict(INVALID_ID))
    body = call.json_object()
    tail = _tail(body.get("tail"))
    pattern = body.get("filter")
    if pattern is not None and not isinstance(pattern, str):
        raise invalid_args("filter must be a string")
    daemon = body.get("daemon_logs")
    host = emu.runtime.hosts.get(instance_id)
    if host is None:  # it never ran (or the emulator runs without sandboxes)
        text = ""
    elif daemon is True or str(daemon).lower() in TRUE:
        text = host.entry.log.daemon()
    elif entrypoint.is_args(inst.runtype):
        text = host.entry.log.output()
    else:
        text = container_log.onstart_output(host.sandbox.path)
    name, url = emu.ops.results.new(call.base_url)
    emu.ops.results.put(name, container_log.select(text, tail, pattern))
    return 200, {"success": True, "result_url": url, "msg": LOGS_MSG}


HANDLERS: dict[str, Handler] = {"request_logs": request_logs}
