"""The timer rules of the whitepaper (section 6) as wireguard-go's timers.go states them, for a sans-I/O Device.

Each peer carries five deadlines (monotonic seconds, None = not pending), named after wireguard-go's timers:

| deadline                 | armed by                                        | on expiry                                    |
|--------------------------|-------------------------------------------------|----------------------------------------------|
| t_retransmit_handshake   | an initiation sent (REKEY_TIMEOUT + jitter)     | resend, or give up after MAX_TIMER_HANDSHAKES |
| t_send_keepalive         | data received (KEEPALIVE_TIMEOUT)               | keepalive (passive keepalive)                |
| t_new_handshake          | data sent (KEEPALIVE + REKEY_TIMEOUT + jitter)  | new handshake: the peer stopped answering     |
| t_zero_key_material      | a session derived (3 x REJECT_AFTER_TIME)       | drop every key and handshake state           |
| t_persistent_keepalive   | any authenticated packet in or out (interval)   | keepalive (persistent keepalive)             |

`TimerRules` is mixed into `Device`: the `_timers_*` hooks are called where wireguard-go calls its `timers*`
functions (once per peer per batch on the data path), `handle_timer` runs what is due.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from wiregate.wireguard.constants import (
    KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX_MS,
    RESOLVE_EVERY_ATTEMPTS,
)
from wiregate.wireguard.events import HandshakeGaveUp, KeysZeroed, ResolveEndpoint

if TYPE_CHECKING:
    from wiregate.wireguard.device import Peer


class TimerRules:
    """Timer hooks and expiry handlers; needs `peers`, `_rng`, `_events`, `_send_initiation`,
    `_send_keepalive` and `_zero_all` from the Device it is mixed into."""

    peers: dict[bytes, "Peer"]
    _rng: Callable[[int], bytes]
    _events: list[object]

    # -- hooks -----------------------------------------------------------------------------------------------
    def _jitter(self) -> float:
        """0..333 ms, so peers that lost a handshake at the same moment do not retry in lockstep."""
        return (int.from_bytes(self._rng(2), "little") % REKEY_TIMEOUT_JITTER_MAX_MS) / 1000.0

    def _timers_data_sent(self, peer: "Peer", now: float) -> None:
        """Data (not a keepalive) went out: expect something back within KEEPALIVE_TIMEOUT + REKEY_TIMEOUT."""
        if peer.t_new_handshake is None:
            peer.t_new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()

    @staticmethod
    def _timers_data_received(peer: "Peer", now: float) -> None:
        """Data came in: answer with a keepalive unless we send something within KEEPALIVE_TIMEOUT."""
        if peer.t_send_keepalive is None:
            peer.t_send_keepalive = now + KEEPALIVE_TIMEOUT
        else:
            peer.need_another_keepalive = True

    @staticmethod
    def _timers_any_authenticated_packet_sent(peer: "Peer") -> None:
        """Anything authenticated we send counts as the keepalive the peer may be waiting for."""
        peer.t_send_keepalive = None

    @staticmethod
    def _timers_any_authenticated_packet_received(peer: "Peer") -> None:
        """The peer is alive: no need for the 'stopped hearing back' handshake."""
        peer.t_new_handshake = None

    @staticmethod
    def _timers_any_authenticated_packet_traversal(peer: "Peer", now: float) -> None:
        """Any authenticated packet in or out restarts the persistent keepalive interval."""
        if peer.persistent_keepalive:
            peer.t_persistent_keepalive = now + peer.persistent_keepalive

    def _timers_handshake_initiated(self, peer: "Peer", now: float) -> None:
        """An initiation went out: retry it after REKEY_TIMEOUT plus jitter unless answered."""
        peer.t_retransmit_handshake = now + REKEY_TIMEOUT + self._jitter()

    @staticmethod
    def _timers_session_derived(peer: "Peer", now: float) -> None:
        """A new session exists: if no newer one follows within 3 x REJECT_AFTER_TIME, zero everything."""
        peer.t_zero_key_material = now + 3 * REJECT_AFTER_TIME

    # -- expiry ----------------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When `handle_timer` must next be called (monotonic seconds; may be in the past = now), or None."""
        best = None
        for peer in self.peers.values():
            for t in (peer.t_retransmit_handshake, peer.t_send_keepalive, peer.t_new_handshake,
                      peer.t_zero_key_material, peer.t_persistent_keepalive):
                if t is not None and (best is None or t < best):
                    best = t
        return best

    def handle_timer(self, now: float) -> None:
        """Run every peer timer whose deadline is <= now."""
        for peer in list(self.peers.values()):
            if peer.t_retransmit_handshake is not None and peer.t_retransmit_handshake <= now:
                peer.t_retransmit_handshake = None
                self._expired_retransmit_handshake(peer, now)
            if peer.t_send_keepalive is not None and peer.t_send_keepalive <= now:
                peer.t_send_keepalive = None
                self._expired_send_keepalive(peer, now)
            if peer.t_new_handshake is not None and peer.t_new_handshake <= now:
                peer.t_new_handshake = None
                self._send_initiation(peer, now, retry=False)  # type: ignore[attr-defined]
            if peer.t_zero_key_material is not None and peer.t_zero_key_material <= now:
                peer.t_zero_key_material = None
                self._zero_all(peer)  # type: ignore[attr-defined]
                self._events.append(KeysZeroed(peer.public_key))
            if peer.t_persistent_keepalive is not None and peer.t_persistent_keepalive <= now:
                peer.t_persistent_keepalive = None
                if peer.persistent_keepalive:
                    self._send_keepalive(peer, now)  # type: ignore[attr-defined]

    def _expired_retransmit_handshake(self, peer: "Peer", now: float) -> None:
        """Retry every REKEY_TIMEOUT (+jitter); after MAX_TIMER_HANDSHAKES retries give up and drop the queue.
        Every RESOLVE_EVERY_ATTEMPTS failed tries, ask for a fresh DNS answer for a named endpoint."""
        if peer.handshake_attempts > MAX_TIMER_HANDSHAKES:
            peer.t_send_keepalive = None
            peer.staged.clear()
            if peer.t_zero_key_material is None:
                peer.t_zero_key_material = now + 3 * REJECT_AFTER_TIME
            self._events.append(HandshakeGaveUp(peer.public_key))
            return
        peer.handshake_attempts += 1
        if peer.endpoint_host and peer.handshake_attempts % RESOLVE_EVERY_ATTEMPTS == 0:
            self._events.append(ResolveEndpoint(peer.public_key, peer.endpoint_host, peer.endpoint_port))
        self._send_initiation(peer, now, retry=True)  # type: ignore[attr-defined]

    def _expired_send_keepalive(self, peer: "Peer", now: float) -> None:
        """Passive keepalive: data came in and we sent nothing back for KEEPALIVE_TIMEOUT."""
        self._send_keepalive(peer, now)  # type: ignore[attr-defined]
        if peer.need_another_keepalive:
            peer.need_another_keepalive = False
            peer.t_send_keepalive = now + KEEPALIVE_TIMEOUT
