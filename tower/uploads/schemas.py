"""What the uploads API returns."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from tower.uploads.archive import UploadKind


class UploadOut(BaseModel):
    upload_id: str
    kind: UploadKind
    filename: str | None
    size: int
    sha256: str
    entries: int
    created_at: datetime
    expires_at: datetime
