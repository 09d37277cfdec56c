"""The notifier's records and rules, without I/O: what an event says, on which channel, to whom."""
