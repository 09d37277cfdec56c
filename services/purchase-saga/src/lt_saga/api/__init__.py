"""The purchase saga's HTTP API: routes, their request and response schemas, and their dependencies."""
