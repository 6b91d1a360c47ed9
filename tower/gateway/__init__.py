"""Per-job gateway tokens: minted at claim, checked for the gateway, dead with the attempt."""
