"""The shape of the ids tower stores: every layer checks a path's id against these
before asking the database, so a malformed id is a plain 404 or 422."""

from __future__ import annotations

import re

SAFE_ID = r"^[A-Za-z0-9_-]{1,64}$"
SAFE_ID_PATTERN = re.compile(SAFE_ID)
# A job id is its agent id, a dash and 12 hex digits.
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}-[0-9a-f]{12}$")
