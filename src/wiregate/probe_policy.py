"""The home side's tunnel-watching rules, pure: fed probe answers, handshake news and the time, they say what to do.

    probes = ProbePolicy()
    probes.answered(sent_at, now)           # a probe echo came back (sent_at: the time it carried)
    silent = probes.due_restart(now, interval)  # not None: restart the handshake now (seconds without an answer)
    probes.restarted()                      # the tunnel did restart it (counted for status)
    probes.reachable(now, interval)         # the gateway answers (for status and metrics)

    watch = HandshakeWatch(started=now)
    watch.update(now, handshaken)           # "warn" once when no handshake came in time, then "ok" once

The runner (runner.Prober, Node._probe_loop) is the adapter: it owns the socket and the sleeps, reads the clock and
passes it in, and acts on the answers. Tests drive these with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# seconds without a probe answer before the home restarts the handshake (at least; three probe intervals when longer)
PROBE_SILENCE = 3.0
RESTART_EVERY = 10.0  # seconds between such restarts while the gateway stays away
# an echo carries the time its probe was sent; one claiming to be older than this (or from the future) is not ours
MAX_RTT = 60.0
# seconds without any handshake with the gateway before the home says so: WireGuard tries at once and again every
# REKEY_TIMEOUT (5 s), so by then three attempts have gone unanswered (a wrong port, a firewall, a wrong key)
HANDSHAKE_WARN_AFTER = 12.0
RESOLVE_RETRY = 2.0  # seconds between lookups of the gateway's name until it first resolves


def silence_limit(interval: float) -> float:
    """How long the gateway may leave probes unanswered and still count as reachable."""
    return max(3 * interval, PROBE_SILENCE)


def resolve_delay(resolved: bool, interval: float) -> float:
    """Seconds until the next lookup of the gateway's name: `interval` once it resolved, RESOLVE_RETRY before."""
    return interval if resolved else RESOLVE_RETRY


@dataclass(slots=True)
class ProbePolicy:
    """Probe counters and the restart rule of one gateway.

    The tunnel worked (a probe was answered) and probes now go unanswered for longer than silence_limit: the
    gateway may have restarted and lost our session. WireGuard alone would retry 15 s after unanswered data;
    restarting the handshake now reconnects within a few seconds of the gateway coming back. At most once per
    RESTART_EVERY; never before the first answer (a gateway never reached is HandshakeWatch's business)."""

    restart_every: float = RESTART_EVERY
    sent: int = 0
    replies: int = 0
    last_reply: float | None = None
    rtt: float | None = None
    restarts: int = 0
    last_restart: float | None = None

    def probe_sent(self) -> None:
        self.sent += 1

    def answered(self, sent_at: float, now: float) -> bool:
        """An echo of a probe sent at `sent_at` arrived at `now`; False (ignored) when that time cannot be ours."""
        if not 0 <= now - sent_at < MAX_RTT:
            return False
        self.rtt = now - sent_at
        self.last_reply = now
        self.replies += 1
        return True

    def silent_for(self, now: float) -> float:
        """Seconds since the last answer (0 before the first one)."""
        return 0.0 if self.last_reply is None else now - self.last_reply

    def reachable(self, now: float, interval: float) -> bool:
        """True while the gateway answers probes (the last answer within silence_limit)."""
        return self.last_reply is not None and now - self.last_reply <= silence_limit(interval)

    def due_restart(self, now: float, interval: float) -> float | None:
        """The seconds of silence when the handshake should be restarted now (the attempt is then taken as made,
        whatever it gives), else None."""
        silent = self.silent_for(now)
        if silent <= silence_limit(interval):
            return None
        if self.last_restart is not None and now - self.last_restart <= self.restart_every:
            return None
        self.last_restart = now
        return silent

    def restarted(self) -> None:
        """The tunnel restarted the handshake (count it; a tunnel that cannot does not call this)."""
        self.restarts += 1


class HandshakeWatch:
    """Has the tunnel to the gateway ever handshaken? `update(now, handshaken)` returns "warn" once when it has not
    for `warn_after` seconds since `started`, then "ok" once when a handshake comes, else None. A wrong
    gateway_endpoint is otherwise silent: the home is "ready" and WireGuard retries without a word."""

    def __init__(self, started: float, warn_after: float = HANDSHAKE_WARN_AFTER) -> None:
        self.started = started
        self.warn_after = warn_after
        self.warned = False
        self.done = False  # a handshake was seen: nothing more to watch

    def update(self, now: float, handshaken: bool) -> str | None:
        if self.done:
            return None
        if handshaken:
            self.done = True
            return "ok" if self.warned else None
        if not self.warned and now - self.started >= self.warn_after:
            self.warned = True
            return "warn"
        return None

    @property
    def waiting(self) -> bool:
        """True while the warning stands (no handshake yet, and the time is up)."""
        return self.warned and not self.done
