"""Where an emergency call comes from (art. 3.7, 3.8).

A call from inside the customer's site networks is at the installation address (verified);
from anywhere else the device is nomadic and its address is not known to the operator.
"""

from __future__ import annotations

import ipaddress

from .model import Address, Customer, Location


def parse_ip(raw: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP from what Asterisk reports ('127.0.0.2', '127.0.0.2:5060', '[::1]:5060')."""
    if not raw:
        return None
    text = raw.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def locate(customer: Customer, source_ip: str | None) -> tuple[Location, Address | None]:
    ip = parse_ip(source_ip)
    if ip is None:
        return Location.UNKNOWN, None
    for network in customer.site_networks:
        if ip.version == network.version and ip in network:
            return Location.VERIFIED, customer.install_address
    return Location.NOMADIC, None
