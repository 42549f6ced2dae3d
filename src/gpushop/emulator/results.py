"""The `result_url`s of Vast.ai's asynchronous answers (execute, request_logs).

The real API answers at once with a URL on S3 (`https://s3.amazonaws.com/vast.ai/instance_logs/
<32 hex>.log`) where the text appears a few seconds later; until then a plain unauthenticated GET
answers 404 (the official CLI polls it every 0.3 s, 30 times). The emulator serves the same path
under its own root: `<emulator>/vast.ai/instance_logs/<32 hex>.log`, 404 (S3's XML `NoSuchKey`)
until the text is put, then 200 `text/plain`. Not an API endpoint: no auth, never rate-limited,
not in the request log. A reset forgets every result.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

PREFIX = "/vast.ai/instance_logs/"
MAX_RESULTS = 1000  # the oldest are forgotten beyond this
NO_SUCH_KEY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
    "<Message>The specified key does not exist.</Message></Error>"
)


class ResultStore:
    def __init__(self) -> None:
        self._texts: OrderedDict[str, str | None] = OrderedDict()

    def new(self, base_url: str) -> tuple[str, str]:
        """(name, url) of a result not ready yet."""
        name = secrets.token_hex(16)
        self._texts[name] = None
        while len(self._texts) > MAX_RESULTS:
            self._texts.popitem(last=False)
        return name, f"{base_url.rstrip('/')}{PREFIX}{name}.log"

    def put(self, name: str, text: str) -> None:
        if name in self._texts:
            self._texts[name] = text

    def get(self, path: str) -> str | None:
        """The text at `path` (None: unknown or not ready)."""
        name = path.removeprefix(PREFIX).removesuffix(".log")
        return self._texts.get(name)

    def clear(self) -> None:
        self._texts.clear()
