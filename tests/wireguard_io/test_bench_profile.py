"""The benchmark's profile split: every function's own time lands in a data-path stage, helpers by their caller."""

from __future__ import annotations

import cProfile
import pstats

from tests.wireguard.wgcore_helpers import ADDR_A, Pair, ip4
from wiregate.bench.wireguard import STAGES, profile_stages


def test_profile_of_a_device_pair_splits_into_send_and_receive_stages():
    p = Pair()
    p.connect()
    p.a.update_peer(p.b.public_key, allowed_ips=("10.0.0.0/24",))
    # alternating destinations defeat the last-destination memo, so AllowedIPs lookups run on every packet and
    # must be charged to their caller's stage ("route"), not to "other"
    batch = [ip4("10.0.0.1", f"10.0.0.{2 + i % 2}", b"z" * 1000) for i in range(64)]
    prof = cProfile.Profile()
    prof.enable()
    delivered = 0
    for _ in range(40):
        p.a.send_packets(batch, p.now)
        p.b.receive_datagrams([(d, ADDR_A) for d, _ in p.a.take_datagrams()], p.now)
        delivered += len(p.b.take_packets())
    prof.disable()
    assert delivered == 40 * 64
    stages = profile_stages(pstats.Stats(prof))
    assert set(stages) <= {name for name, _ in STAGES} | {"other"}
    assert abs(sum(stages.values()) - 100) < 1
    for stage in ("send: parse/route/queue", "send: pad/nonce/header", "send: AEAD encrypt",
                  "receive: parse/check", "receive: AEAD decrypt"):
        assert stages.get(stage, 0) > 1, (stage, stages)
    assert stages.get("other", 0) < 6, stages  # the test's own loop only: lookups count as "route"
