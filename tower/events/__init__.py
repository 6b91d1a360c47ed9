"""Job events: state changes and log chunks, stored per job and streamed over SSE."""
