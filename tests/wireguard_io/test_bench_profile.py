"""The benchmark's profile summary: cProfile own time grouped into data-path stages."""

from __future__ import annotations

import cProfile
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wiregate.bench.wireguard import _profile_stages, _stage_of
from wiregate.wireguard.offload import coalesce


def test_functions_are_put_in_their_data_path_stage() -> None:
    assert _stage_of("~", "<built-in method posix.read>") == "tun_read"
    assert _stage_of("~", "<built-in method posix.write>") == "tun_write"
    assert _stage_of("/x/wiregate/wireguard/offload.py", "coalesce") == "tun_write"
    assert _stage_of("~", "<method 'decrypt' of 'cryptography.hazmat.bindings._rust.openssl.aead."
                          "ChaCha20Poly1305' objects>") == "aead"
    assert _stage_of("~", "<method 'sendmsg' of '_socket.socket' objects>") == "udp_syscalls"
    assert _stage_of("/x/wiregate/wireguard/device.py", "receive_datagrams") == "core_receive"
    assert _stage_of("/x/wiregate/wireguard/allowedips.py", "lookup") == "routing"
    assert _stage_of("/x/asyncio/events.py", "_run") == "event_loop"


def test_profile_of_a_workload_is_split_into_stages_that_add_up(tmp_path: Path) -> None:
    aead = ChaCha20Poly1305(bytes(32))
    r, w = os.pipe()
    prof = cProfile.Profile()
    prof.enable()
    for i in range(300):
        aead.encrypt(i.to_bytes(12, "little"), bytes(1400), None)
        os.write(w, b"x")
        os.read(r, 1)
        coalesce([bytes(60)])
    prof.disable()
    os.close(r)
    os.close(w)
    prof.dump_stats(str(tmp_path / "a.prof"))
    stages = _profile_stages(tmp_path)
    for stage in ("aead", "tun_read", "tun_write"):
        assert stages.get(stage, 0) > 0, stages
    assert 99 <= sum(stages.values()) <= 101
    assert _profile_stages(tmp_path / "none") == {}
