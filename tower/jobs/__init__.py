"""Jobs: submit, get, list, cancel, wait."""
