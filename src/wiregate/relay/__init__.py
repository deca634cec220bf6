"""Gateway relay (VPS side): TCP and UDP listeners forwarding to site backends with a PROXY header first.

The job HAProxy does in `mode tcp` with `send-proxy(-v2)`: balancing, health checks, limits, zero-copy splice
on Linux. Decisions live in sans-I/O classes (`pool.BackendPool`, `pool.SourceLimits`, `flows.FlowTable`);
the asyncio layer (`tcp`, `udp`, `datapath`, `server`) only moves sockets and bytes. See docs/relay.md.
"""

from wiregate.relay.config import (
    Backend,
    HealthCheck,
    RelayConfig,
    TCPService,
    UDPService,
    config_from_dict,
    config_to_dict,
    load_config,
)
from wiregate.relay.server import Relay

__all__ = ["Backend", "HealthCheck", "Relay", "RelayConfig", "TCPService", "UDPService", "config_from_dict",
           "config_to_dict", "load_config"]
