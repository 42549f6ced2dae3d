"""API refusals shared by the state and the template book: the status and exact JSON body."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An HTTP answer other than success: status and the exact JSON body to send."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("msg", ""))
        self.status = status
        self.body = body


def invalid_args(msg: str, **extra: Any) -> ApiError:
    return ApiError(400, {"success": False, "error": "invalid_args", "msg": msg, **extra})
