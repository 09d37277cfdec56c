"""Use cases of the quota service, one module per capability: admission, settlement (with the expiry sweep),
top-ups, freezes, thresholds and management. `context` is the state they share. They orchestrate the pure
rules of `lt_quota.domain` over the adapters (SQL in the repository, Lua in Redis)."""
