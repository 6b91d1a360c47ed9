"""Files and archives uploaded for jobs' workspaces, streamed into PostgreSQL."""
