"""The outbound URL guard: every spelling of an internal address is refused, public ones pass, the operator's
allow-list lets chosen networks through, and a host is judged by everything it resolves to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest

from leaky_common.outbound import (
    DestinationRefused,
    OutboundPolicy,
    check_address,
    parse_destination,
    resolve_checked,
)

NONE = OutboundPolicy()


async def verdict(url: str, policy: OutboundPolicy = NONE) -> str:
    """The refusal category for `url`, or "ok"."""
    try:
        d = parse_destination(url)
        await resolve_checked(d.host, d.port, policy)
    except DestinationRefused as exc:
        return exc.category
    return "ok"


@pytest.mark.parametrize(
    ("url", "category"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.9.9.9:8082/internal/admit", "loopback"),
        ("http://2130706433/", "loopback"),  # decimal
        ("http://0177.0.0.1/", "loopback"),  # octal
        ("http://0x7f.0.0.1/", "loopback"),  # hex
        ("http://0x7f000001/", "loopback"),
        ("http://127.1/", "loopback"),  # short form
        ("http://127.0.0.1./", "loopback"),  # trailing dot
        ("http://localhost/", "loopback"),
        ("http://LocalHost./", "loopback"),
        ("http://api.localhost/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6
        ("http://[::ffff:7f00:1]/", "loopback"),
        ("http://[::127.0.0.1]/", "loopback"),  # IPv4-compatible IPv6
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 embedding 127.0.0.1
        ("http://[64:ff9b::a9fe:a9fe]/", "metadata"),  # NAT64 embedding 169.254.169.254
        ("http://0.0.0.0/", "unspecified"),
        ("http://0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fc00::1]/", "private"),  # ULA
        ("http://[fd12:3456::1]/", "private"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://100.100.100.200/", "metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://100.64.0.1/", "cgnat"),
        ("http://192.0.2.1/", "private"),  # documentation (TEST-NET-1)
        ("http://240.0.0.1/", "private"),  # reserved
        ("http://255.255.255.255/", "private"),
    ],
)
async def test_internal_addresses_are_refused(url: str, category: str) -> None:
    assert await verdict(url) == category


@pytest.mark.parametrize(
    "url",
    [
        "http://evil@127.0.0.1/",  # userinfo trick: the host is 127.0.0.1
        "http://127.0.0.1@evil.example/",
        "http://user:pw@example.com/",
        "http://evil.example\\@127.0.0.1/",
        "http://127.0.0.1%2f@evil.example/",
        "http://[fe80::1%25eth0]/",
        "ftp://example.com/",
        "gopher://127.0.0.1:6379/_INFO",
        "file:///etc/passwd",
        "//example.com/x",
        "http:///x",
        "http://example.com:99999/",
        "http://example.com:-1/",
        "not a url",
    ],
)
async def test_malformed_or_tricky_urls_are_refused_before_resolving(url: str) -> None:
    assert await verdict(url) == "invalid"


@pytest.mark.parametrize("url", ["http://8.8.8.8/", "https://1.1.1.1:8443/x", "http://[2606:4700::1111]/"])
async def test_public_addresses_pass(url: str) -> None:
    assert await verdict(url) == "ok"


def test_parse_keeps_host_and_default_ports() -> None:
    assert parse_destination("https://Hooks.Example.com./x").host == "hooks.example.com"
    assert parse_destination("https://hooks.example.com/x").port == 443
    assert parse_destination("http://hooks.example.com/x").port == 80
    assert parse_destination("http://[2606:4700::1111]:81/").host == "2606:4700::1111"


async def test_allow_list_lets_only_the_named_networks_through() -> None:
    policy = OutboundPolicy.from_strings(["127.0.0.1/32", "::1", "10.1.0.0/16"])
    assert await verdict("http://127.0.0.1:9/", policy) == "ok"
    assert await verdict("http://localhost:9/", policy) == "ok"
    assert await verdict("http://[::1]/", policy) == "ok"
    assert await verdict("http://10.1.2.3/", policy) == "ok"
    assert await verdict("http://[::ffff:127.0.0.1]/", policy) == "ok"  # judged as its IPv4 address
    assert await verdict("http://127.0.0.2/", policy) == "loopback"
    assert await verdict("http://10.2.0.1/", policy) == "private"
    assert await verdict("http://169.254.169.254/", policy) == "metadata"
    for bad in (["not-a-network"], ["127.0.0.1:0"], ["127.0.0.1:http"], ["[::1]:99999"]):
        with pytest.raises(ValueError):
            OutboundPolicy.from_strings(bad)


async def test_allow_list_can_name_one_address_and_port() -> None:
    # A local fake receiver is allowed without opening the services listening on the same address.
    policy = OutboundPolicy.from_strings(["127.0.0.1:8091", "[::1]:8092"])
    assert await verdict("http://127.0.0.1:8091/hook", policy) == "ok"
    assert await verdict("http://localhost:8091/hook", policy) == "ok"
    assert await verdict("http://[::1]:8092/hook", policy) == "ok"
    assert await verdict("http://127.0.0.1:8082/internal/admit", policy) == "loopback"
    assert await verdict("http://127.0.0.1/", policy) == "loopback"  # port 80
    assert await verdict("http://[::1]:8091/", policy) == "loopback"


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    async def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for a in answers[host]:
            family = socket.AF_INET6 if ":" in a else socket.AF_INET
            out.append((family, socket.SOCK_STREAM, 6, "", (a, port)))
        return out

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)


async def test_names_are_judged_by_every_address_they_resolve_to(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(
        monkeypatch,
        {
            "public.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
            "mixed.example": ["93.184.215.14", "10.0.0.7"],  # one bad answer refuses the host
            "rebind.example": ["127.0.0.1"],
            "meta.example": ["169.254.169.254"],
            "mapped.example": ["::ffff:192.168.0.1"],
        },
    )
    assert await verdict("https://public.example/hook") == "ok"
    assert await verdict("https://mixed.example/hook") == "private"
    assert await verdict("https://rebind.example/hook") == "loopback"
    assert await verdict("https://meta.example/") == "metadata"
    assert await verdict("https://mapped.example/") == "private"
    assert await verdict("https://nxdomain.example/") == "unresolvable"
    addresses = await resolve_checked("public.example", 443, NONE)
    assert [a.version for a in addresses] == [4, 6]


def test_refusal_message_names_the_category_never_the_address() -> None:
    with pytest.raises(DestinationRefused) as caught:
        check_address(ipaddress.ip_address("10.20.30.40"), NONE)
    assert caught.value.category == "private"
    assert "10.20.30.40" not in str(caught.value)
