"""What the gateway talks to: providers, quota, the broker (with its spool), the management owners, data files."""
