"""The egress proxy (docs/egress.md): what a job may reach besides the gateway."""
