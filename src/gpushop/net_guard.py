"""Outbound requests to URLs users give (webhooks) that cannot reach this network's insides.

A URL whose host resolves to a loopback, private, link-local, multicast or otherwise non-global
address is refused (SSRF). The check is made on the address that is actually dialled: the host
is resolved once, every address is checked, and the request goes to that checked IP (with the
URL's host in ``Host`` and as the TLS server name, so certificates are verified as usual). A DNS
answer that changes between a check and the connection (rebinding) cannot slip through: there
is no second lookup. ``allow_private`` (GPUSHOP_WEBHOOK_ALLOW_PRIVATE) lifts the rule for tests
and labs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

import httpx

from gpushop.errors import GpushopError, UsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(GpushopError):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


class Unresolvable(GpushopError):
    """The URL's host does not resolve."""


def parse(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL without credentials, or UsageError."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"url: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("url: an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise UsageError("url: no user or password in the URL (the signature authenticates)")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def why_refused(ip: IPAddress) -> str | None:
    """Why webhooks may not dial this address (None: a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for kind, bad in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
    ):
        if bad:
            return f"{ip} is a {kind} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


async def resolve(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """The host's addresses, every one of them allowed; AddressRefused if any is not (a name
    that resolves to one public and one private address is refused: either may be dialled)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise Unresolvable(f"{host} does not resolve: {exc.strerror}") from None
        found = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not allow_private:
        for ip in found:
            reason = why_refused(ip)
            if reason is not None:
                raise AddressRefused(
                    f"{host} resolves to {ip}: {reason}; webhooks reach public addresses only"
                    " (GPUSHOP_WEBHOOK_ALLOW_PRIVATE=1 allows it outside production)"
                )
    return found


async def post_pinned(
    client: httpx.AsyncClient,
    url: str,
    content: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    timeout: float,
) -> httpx.Response:
    """POST to ``url`` on an address checked by :func:`resolve`, never following a redirect.
    Tries the addresses in order until one connects."""
    scheme, host, port = parse(url)
    addresses = await resolve(host, port, allow_private=allow_private)
    parts = urlsplit(url)
    default_port = (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    host_header = host if default_port else f"{host}:{port}"
    if ":" in host:
        host_header = f"[{host}]" if default_port else f"[{host}]:{port}"
    last: Exception | None = None
    for ip in addresses:
        netloc = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        target = urlunsplit(parts._replace(netloc=netloc))
        try:
            return await client.post(
                target,
                content=content,
                headers={**headers, "Host": host_header},
                extensions={"sni_hostname": host},
                timeout=timeout,
                follow_redirects=False,
            )
        except httpx.ConnectError as exc:
            last = exc
    assert last is not None
    raise last
