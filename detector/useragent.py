"""Browser family and OS from a User-Agent, for ``user_agent_change``.

Only the family and the operating system matter: browsers auto-update all day,
so ``Chrome/120`` becoming ``Chrome/121`` is the same browser, while Chrome
becoming Firefox, or Windows becoming Android, is a different device. The
classifier is a short ordered list of tokens (the order matters: every Chromium
browser also says "Chrome" and "Safari"), cached because a fleet uses few UAs.
Anything unrecognised is named by its first product token (``curl``,
``python-requests``), so swapping one script for another still shows.

>>> classify("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
...          "(KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36 Edg/121.0.0.0")
('Edge', 'Windows')
>>> classify("python-requests/2.31.0")
('python-requests', 'Other')
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

_BROWSERS: Final = (
    ("Edg/", "Edge"),
    ("EdgA/", "Edge"),
    ("EdgiOS/", "Edge"),
    ("Edge/", "Edge"),
    ("OPR/", "Opera"),
    ("Opera", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("YaBrowser/", "Yandex"),
    ("Vivaldi/", "Vivaldi"),
    ("FxiOS/", "Firefox"),
    ("Firefox/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("MSIE ", "Internet Explorer"),
    ("Trident/", "Internet Explorer"),
    ("Safari/", "Safari"),
)

_SYSTEMS: Final = (
    ("Windows Phone", "Windows Phone"),
    ("Windows", "Windows"),
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("iPod", "iOS"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Mac OS X", "macOS"),
    ("Macintosh", "macOS"),
    ("Linux", "Linux"),
    ("FreeBSD", "FreeBSD"),
)


@lru_cache(maxsize=16384)
def classify(user_agent: str) -> tuple[str, str]:
    """Returns (browser family, OS family)."""
    family = ""
    for token, name in _BROWSERS:
        if token in user_agent:
            family = name
            break
    if not family:
        first = user_agent.strip().split(" ", 1)[0]
        family = first.split("/", 1)[0] or "Other"
        if family == "Mozilla":
            family = "Other"
    system = "Other"
    for token, name in _SYSTEMS:
        if token in user_agent:
            system = name
            break
    return family, system


def same_browser(a: str, b: str) -> bool:
    """Whether ``user_agent_change`` tolerates ``a`` -> ``b`` (a version upgrade)."""
    return classify(a) == classify(b)
