"""What a session's User-Agent says about the device, for the sessions page.

Pure module. Parsed with ua-parser (the maintained uap-core regexes), never
by hand: a browser's string is a tangle of historic tokens that only a
curated, updated list reads correctly.
"""

from __future__ import annotations

from dataclasses import dataclass

import ua_parser

UNKNOWN = "Unknown browser"


@dataclass(frozen=True)
class Device:
    browser: str  # "Chrome 156", "Mobile Safari 17", "curl 8", or UNKNOWN
    os: str  # "Linux", "iOS 17.1", or ""
    device: str  # "iPhone", or "" for computers and anything unnamed

    def summary(self) -> str:
        """One line: 'Chrome 156 on Linux', 'Mobile Safari 17 on iOS 17.1 (iPhone)'."""
        where = self.os
        if self.device and self.device.lower() not in where.lower():
            where = f"{where} ({self.device})" if where else self.device
        return f"{self.browser} on {where}" if where else self.browser


def _version(*parts: str | None) -> str:
    return ".".join(p for p in parts if p)


def describe(user_agent: str) -> Device:
    """The browser, OS and device named by `user_agent` ('' for none sent)."""
    if not user_agent.strip():
        return Device(UNKNOWN, "", "")
    parsed = ua_parser.parse(user_agent[:512])
    browser = UNKNOWN
    if parsed.user_agent is not None and parsed.user_agent.family != "Other":
        ua = parsed.user_agent
        browser = f"{ua.family} {ua.major or ''}".strip()
    os = ""
    if parsed.os is not None and parsed.os.family != "Other":
        os = f"{parsed.os.family} {_version(parsed.os.major, parsed.os.minor)}".strip()
    device = ""
    if parsed.device is not None and parsed.device.family not in ("Other", "Spider"):
        device = parsed.device.family
    return Device(browser, os, device)
