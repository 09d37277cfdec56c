"""The analytics HTTP API: routes, typed request/response schemas, dependencies."""
