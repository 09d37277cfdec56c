"""The notifier's admin HTTP API: routes, their request and response schemas, and their dependencies."""
