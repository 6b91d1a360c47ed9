"""Turning a claimed job into a run: the runner interface and its implementations."""
