"""Analytics' use cases: ingesting usage batches (with the detectors) and the read side (reports)."""
