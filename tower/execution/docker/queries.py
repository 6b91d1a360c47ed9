"""The Docker runtime's SQL: advisory locks that serialise Docker-side setup per host."""

# Docker's duplicate-name check for networks is not atomic: replicas creating the workers
# network at once could each make one. They serialise on this lock (held for the call).
NETWORK_LOCK = "SELECT pg_advisory_lock(hashtext('parpaing-network:' || $1))"
NETWORK_UNLOCK = "SELECT pg_advisory_unlock(hashtext('parpaing-network:' || $1))"
