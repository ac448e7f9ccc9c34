"""PII redaction of kept text (FineWeb / datatrove `PIIFormatter` style), as pure functions; no Spark.

    from udfs.pii import redact
    text, counts = redact("mail jane@corp.com from 8.8.4.4")   # counts == {"email": 1, "ipv4": 1}

What is replaced, each by one FIXED placeholder (not datatrove's rotating fake addresses), so that a model sees one
stand-in per kind and a second pass changes nothing:

* email addresses (`local@domain.tld`, the local part as in RFC 5322's dot-atom, a letters-only top-level
  domain) -> `email@example.com`;
* public IPv4 addresses: four dotted decimal numbers 0-255 that are not part of a longer dotted token (the
  `1.2.3.4` of a version `1.2.3.4.5`, `v1.2.3.4` or a section `4.1.2.3.b` stays), kept unless Python's `ipaddress` calls the address
  global: 10.x, 172.16-31.x, 192.168.x, 127.x, 169.254.x, 100.64/10, the documentation ranges and the like stay
  -> `192.0.2.1` (RFC 5737 TEST-NET-1, itself not global);
* public IPv6 addresses: a run of hex digits and colons (optionally ending in a dotted IPv4) that `ipaddress`
  parses, that is global and inside 2000::/3, the block every public unicast address comes from (so `::1`,
  `fe80::1`, `fd00::1`, and `cafe::1` in code stay) -> `2001:db8::1` (RFC 3849, not global); an IPv4-mapped
  `::ffff:8.8.4.4` has its IPv4 part replaced as an IPv4 address;
* phone numbers, only when asked (off by default): North American `(415) 555-2671` / `415-555-2671` /
  `+1 415 555 2671` (area code and exchange not starting with 0 or 1), or international numbers written with a
  leading `+` and separated digit groups, 8-15 digits in all (`+44 20 7946 0958`) -> `+1-555-0100`.

`redact` returns the new text and {kind: replacements} for kinds email, ipv4, ipv6, phone (kinds without one are
absent). It never reports the values it replaced.
"""
from __future__ import annotations

import ipaddress
import re

PLACEHOLDERS = {"email": "email@example.com", "ipv4": "192.0.2.1", "ipv6": "2001:db8::1", "phone": "+1-555-0100"}
KINDS = tuple(PLACEHOLDERS)

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
EMAIL = re.compile(
    rf"\b{_ATOM}(?:\.{_ATOM})*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}}"
    r"(?![\w-]|\.[A-Za-z0-9])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\w)")
IPV6 = re.compile(r"(?<![\w:.%])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}"
                  r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)")
PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"(?:\+1[\s.-]?)?(?:\([2-9]\d\d\)\s?|[2-9]\d\d[\s.-])[2-9]\d\d[\s.-]\d{4}"  # NANP
    r"|\+[1-9]\d{0,2}(?:[\s.-]\(?\d{1,6}\)?){1,5}"                               # +CC groups
    r")(?!\w|[.-]\d)")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def public_ipv4(s: str) -> bool:
    try:
        return ipaddress.IPv4Address(s).is_global
    except ValueError:
        return False


def public_ipv6(s: str) -> bool:
    try:
        a = ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return a.is_global and a in _GLOBAL_UNICAST


def phone_number(s: str) -> bool:
    if s == PLACEHOLDERS["phone"]:
        return False
    return not s.startswith("+") or 8 <= sum(c.isdigit() for c in s) <= 15


class PIIRedactor:
    """The redaction of one configuration; `redact(text)` -> (text, counts)."""

    def __init__(self, emails: bool = True, ips: bool = True, phones: bool = False):
        self.steps = []  # (kind, pattern, validator, cheap precondition), in this order
        if emails:
            self.steps.append(("email", EMAIL, lambda s: s.lower() != PLACEHOLDERS["email"], "@"))
        if ips:
            # IPv6 first: an address with an embedded IPv4 part is one IPv6 address
            self.steps.append(("ipv6", IPV6, public_ipv6, ":"))
            self.steps.append(("ipv4", IPV4, public_ipv4, "."))
        if phones:
            self.steps.append(("phone", PHONE, phone_number, None))

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        counts: dict[str, int] = {}
        for kind, pattern, valid, needs in self.steps:
            if not text or (needs is not None and needs not in text):
                continue
            placeholder = PLACEHOLDERS[kind]

            def repl(m, kind=kind, valid=valid, placeholder=placeholder):
                s = m.group(0)
                if not valid(s):
                    return s
                counts[kind] = counts.get(kind, 0) + 1
                return placeholder

            text = pattern.sub(repl, text)
        return text, counts


_REDACTORS: dict[tuple, PIIRedactor] = {}


def get_redactor(emails: bool = True, ips: bool = True, phones: bool = False) -> PIIRedactor:
    key = (bool(emails), bool(ips), bool(phones))
    r = _REDACTORS.get(key)
    if r is None:
        r = _REDACTORS[key] = PIIRedactor(*key)
    return r


def redact(text: str, emails: bool = True, ips: bool = True, phones: bool = False) -> tuple[str, dict[str, int]]:
    """(text with PII replaced, {kind: replacements}); see the module docstring."""
    return get_redactor(emails, ips, phones).redact(text)
