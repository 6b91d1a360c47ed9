"""Webhook deliveries as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

DeliveryStatus = Literal["pending", "delivered", "failed", "stopped"]


class WebhookAttempt(BaseModel):
    attempt: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class WebhookDelivery(BaseModel):
    """One delivery (one webhook-id) of a job's terminal event, and its attempts so far."""

    delivery_id: str
    event_type: str
    status: DeliveryStatus
    created_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    attempts: list[WebhookAttempt]


class Redelivery(BaseModel):
    job_id: str
    delivery_id: str
    status: DeliveryStatus = "pending"
