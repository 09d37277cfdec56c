"""The Leaky Tokens web console: server-rendered pages over the gateway's public API (no internal access)."""
