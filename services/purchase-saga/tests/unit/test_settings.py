import socket

from lt_saga.settings import SagaSettings


def test_instance_id_defaults_to_host_and_port() -> None:
    # A restarted instance (same host and port) gets the same id, so it takes its own leases back at once.
    settings = SagaSettings(_env_file=None, port=9184)
    assert settings.owner_id == f"{socket.gethostname()}:9184"


def test_explicit_instance_id_wins() -> None:
    settings = SagaSettings(_env_file=None, instance_id="saga-blue")
    assert settings.owner_id == "saga-blue"
