"""Parpaing tower: the API, the job queue and the dispatcher."""
