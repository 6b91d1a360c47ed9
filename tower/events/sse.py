"""Server-Sent Events framing: one `id:`, one `event:`, one `data:` line of JSON."""

from __future__ import annotations

import json
from typing import Any

KEEPALIVE = ": keepalive\n\n"
MEDIA_TYPE = "text/event-stream"
# Proxies that buffer responses (nginx) pass this one through as it is written.
HEADERS = {"X-Accel-Buffering": "no"}


def frame(event_id: int, name: str, data: dict[str, Any]) -> str:
    # json.dumps escapes newlines inside strings, so the data stays on one line.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {name}\ndata: {payload}\n\n"
