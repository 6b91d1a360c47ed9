"""Tenants: API keys (stored as hashes, each with a tenant and a role) and per-tenant
quotas (docs/tenants.md)."""
