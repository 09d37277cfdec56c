"""Analytics adapters: all SQL (usage tables, detector state, threshold overrides) and the outbox writes."""
