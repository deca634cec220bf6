"""Certificates at home from an ACME CA (RFC 8555): policy (sans-I/O renewal timing), storage, the client (on
certbot's `acme` library), the book the ingress reads (pending challenges, live certificates) and the manager
(the asyncio tasks). See docs/acme.md."""
