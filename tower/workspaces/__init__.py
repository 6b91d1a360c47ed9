"""A job's workspace: what is staged for it on tower's side (uploads, a cloned repository)."""
