"""Signed, durable webhooks (Standard Webhooks) from an outbox in PostgreSQL."""
