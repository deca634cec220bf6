"""The home ingress: listeners that take PROXY headers from trusted sources only, route each connection by TLS SNI,
HTTP Host or port, and pass the client address on (PROXY header or X-Forwarded-For/Forwarded). See docs/ingress.md.
"""

from wiregate.ingress.config import IngressConfig, Listener, Route, from_dict, load_config, to_dict

__all__ = ["Ingress", "IngressConfig", "Listener", "Route", "from_dict", "load_config", "to_dict"]


def __getattr__(name: str):
    if name == "Ingress":  # the asyncio server is imported on use, so config users stay light
        from wiregate.ingress.server import Ingress

        return Ingress
    raise AttributeError(name)
