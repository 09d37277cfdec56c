"""The gateway's use cases: the governed completion flow (admit, call the provider, settle) and the management proxy."""
