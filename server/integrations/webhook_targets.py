"""Webhook targets: where a hook may post. A site admin types the URL, so it must not reach the server's
own network (loopback, private ranges, link-local and cloud metadata, `localhost`, `0.0.0.0`, odd IPv4
spellings such as `2130706433` or `127.1`, `[::1]`, IPv4-mapped IPv6).

The host is resolved and every address it resolves to must be public, at create and again at each
delivery; the delivery then connects to the address that was checked (the Host header and TLS name stay
the URL's), so a name that resolves differently a second later (DNS rebinding) cannot slip through.
`WEBHOOKS_ALLOW_PRIVATE=true` turns the check off for deployments that post to internal services.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from nameplate.errors import NameplateError
from nameplate.protocol.vocabulary import ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Names that are the server itself whatever the resolver says.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class TargetRefused(NameplateError):
    """The URL names a host that is not on the public internet (or does not resolve)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.invalid, message, 422)


@dataclass(frozen=True)
class Target:
    """A checked URL: `url` connects to `address`; `host_header` and `sni` carry the URL's own name."""

    url: str
    host_header: str | None
    sni: str | None


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _host_of(url: httpx.URL) -> str:
    host = url.host.rstrip(".").lower()
    if not host:
        raise TargetRefused("a webhook URL needs a host")
    return host


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the system resolver: it also reads `127.1` and `2130706433`)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused("the webhook's host does not resolve") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # IPv6 scope ids ("fe80::1%eth0") are not part of the address.
        addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    if not addresses:
        raise TargetRefused("the webhook's host does not resolve")
    return addresses


async def check(url_text: str, allow_private: bool) -> Target:
    """The target to connect to for this URL; TargetRefused when the host is not public."""
    url = httpx.URL(url_text)
    if allow_private:
        return Target(url_text, None, None)
    host = _host_of(url)
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        raise TargetRefused("webhooks may not post to this server's own network (localhost)")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = await resolve(host, port)
    if not all(is_public(address) for address in addresses):
        raise TargetRefused("webhooks may not post to loopback, private, link-local or metadata addresses")
    pinned = url.copy_with(host=str(addresses[0]))
    return Target(str(pinned), url.netloc.decode("ascii"), host if url.scheme == "https" else None)
