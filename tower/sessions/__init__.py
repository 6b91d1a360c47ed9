"""Sessions: continuing a finished job, in its workspace and conversation."""
