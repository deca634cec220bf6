"""Route matching, pure: TLS SNI, then HTTP Host (+ path prefix), then the listener's default.

Names are compared normalized (lower case, no trailing dot). Exact names win over wildcards; `*.example.org`
matches exactly one more label (`a.example.org`, not `example.org` nor `a.b.example.org`), as certificate
wildcards do. Among HTTP routes for the same name the longest matching path prefix wins.
"""

from __future__ import annotations

from wiregate.ingress.config import Listener, Route


def _wild(name: str) -> str | None:
    dot = name.find(".")
    return None if dot == -1 else "*" + name[dot:]


class Router:
    """The routing decision of one listener. Build once per config; lookups are dict hits."""

    __slots__ = ("default", "needs_sniff", "_sni", "_host", "routes")

    def __init__(self, listener: Listener) -> None:
        self.routes: dict[str, Route] = {r.name: r for r in listener.routes}
        self.default: Route | None = self.routes.get(listener.default_route) if listener.default_route else None
        self._sni: dict[str, Route] = {}
        self._host: dict[str, list[Route]] = {}
        for r in listener.routes:
            for n in r.sni:
                self._sni.setdefault(n, r)  # first route naming it wins, in file order
            for n in r.host:
                self._host.setdefault(n, []).append(r)
        for lst in self._host.values():
            lst.sort(key=lambda r: -len(r.path_prefix))  # stable: file order among equal prefixes
        # a listener whose every connection goes to the default needs no sniffing (any protocol works), unless that
        # route adds the client's address to HTTP requests: plain HTTP must be recognised to get its headers
        self.needs_sniff = bool(self._sni or self._host) or bool(self.default and self.default.http_headers)

    def for_sni(self, sni: str | None) -> Route | None:
        """Route for a TLS ClientHello's server name (None: no SNI or ECH) -> the named route or the default."""
        if sni is not None:
            r = self._sni.get(sni)
            if r is None and (w := _wild(sni)) is not None:
                r = self._sni.get(w)
            if r is not None:
                return r
        return self.default

    def for_http(self, host: str | None, path: str) -> Route | None:
        """Route for an HTTP request's Host and target path -> a host route whose prefix matches, or the default."""
        if host is not None:
            for key in (host, _wild(host)):
                if key is None:
                    continue
                for r in self._host.get(key, ()):
                    if not r.path_prefix or _path_matches(path, r.path_prefix):
                        return r
        return self.default


def _path_matches(target: str, prefix: str) -> bool:
    """`/api` matches `/api`, `/api/x` and `/api?q`, not `/apix`; a prefix ending in '/' matches as a string."""
    path = target.split("?", 1)[0]
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")
