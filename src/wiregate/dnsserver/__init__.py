"""The gateway's authoritative DNS for the ACME DNS-01 challenge zone, and the channel sites publish through.

`responder` (sans-I/O DNS answers), `channel` (labels, per-site name policy, record store, publish requests,
sans-I/O), `server` (asyncio UDP/TCP adapters). See docs/acme-dns.md.
"""

from wiregate.dnsserver.channel import (
           PUBLISH_PORT,
           ChallengeStore,
           PublishHandler,
           SiteGrant,
           allowed,
           challenge_label,
)
from wiregate.dnsserver.responder import Responder

__all__ = ["PUBLISH_PORT", "ChallengeStore", "PublishHandler", "Responder", "SiteGrant", "allowed",
           "challenge_label"]
