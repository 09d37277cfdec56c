"""`free_port` picks below the kernel's outgoing range, and each pytest-xdist worker from its own share of it:
two workers starting stacks at once cannot pick the same port before either binds it."""

from __future__ import annotations

import pytest

from leaky_devinfra import infra


def test_outside_xdist_the_whole_range_below_the_outgoing_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert infra._port_range(32768) == (20768, 32767)


def test_each_xdist_worker_has_its_own_share(monkeypatch: pytest.MonkeyPatch) -> None:
    shares = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
        shares.append(infra._port_range(32768))
    assert shares == [(20768, 24767), (24768, 28767), (28768, 32767)]


def test_a_port_handed_out_in_a_worker_is_from_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    first, last = infra._port_range(infra._ephemeral_low())
    ports = [infra.free_port() for _ in range(20)]
    assert all(first <= p <= last for p in ports) and len(set(ports)) == 20


@pytest.mark.parametrize(("worker", "count"), [("master", "2"), ("gw5", "2"), ("gw0", "x"), ("gw0", "0")])
def test_an_unexpected_worker_setting_falls_back_to_the_whole_range(
    monkeypatch: pytest.MonkeyPatch, worker: str, count: str
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", count)
    assert infra._port_range(32768) == (20768, 32767)
