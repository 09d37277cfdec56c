"""The gateway's records and rules: request validation, token counting, prices and cost, headers. No I/O."""
