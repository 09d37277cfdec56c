"""The notifier's use cases: queueing notifications from events, delivering them, and the admin API's
subscription management (test sends and retries included)."""
