"""The job queue: claiming, leases, the reaper, and the LISTEN hub."""
