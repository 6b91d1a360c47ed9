"""A job's artifacts: the files it created or changed in its workspace, and its diff."""
