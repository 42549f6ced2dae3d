"""A small synchronous client for the emulator's control API (`/_emulator/...`)."""

from __future__ import annotations

from typing import Any

import httpx


class EmulatorControlError(RuntimeError):
    """The control API refused a request (bad override, bad fault spec)."""


class EmulatorControl:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url + "/_emulator", timeout=30.0)

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
