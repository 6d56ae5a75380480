"""urlopen for http(s) only. Stdlib.

urllib also opens file: and ftp: URLs; an engine URL, a package index or a hub endpoint
typed as file:///... must not turn into a local file read.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request


def open_http(request: urllib.request.Request | str, timeout: float):
    url = request.full_url if isinstance(request, urllib.request.Request) else request
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        # URLError: callers already say "cannot reach ..." for it, with the address.
        raise urllib.error.URLError(f"{url!r} is not an http(s) address")
    return urllib.request.urlopen(request, timeout=timeout)  # nosec B310 - scheme checked above
