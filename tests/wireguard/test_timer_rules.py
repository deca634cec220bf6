"""The timer rules as pure per-peer state (timers.PeerTimers): hooks set deadlines, `expire` yields actions for the
Device to carry out; and the WireGuard core's modules import each other without a cycle (issue 12)."""

from __future__ import annotations

import ast
from pathlib import Path

import wiregate.wireguard
from wiregate.wireguard.constants import (
    KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME, REKEY_TIMEOUT, RESOLVE_EVERY_ATTEMPTS,
)
from wiregate.wireguard.timers import PeerTimers, TimerAction, TimerQueue


def _timers(keepalive: int = 0) -> tuple[PeerTimers, TimerQueue]:
    q = TimerQueue()
    return PeerTimers("peer", q, lambda: 0.25, keepalive), q


def test_retransmits_count_attempts_ask_for_dns_every_third_then_give_up() -> None:
    t, q = _timers()
    now = 0.0
    t.handshake_initiated(now)
    seen: list[list[TimerAction]] = []
    while True:
        due = q.peek()
        if due is None or len(seen) > 40:
            break
        now = due
        for timers in q.pop_due(now):
            actions = list(timers.expire(now, named_endpoint=True))
            seen.append(actions)
            if TimerAction.RETRANSMIT_HANDSHAKE in actions:
                timers.handshake_initiated(now)  # what the Device does when it sends the initiation again
            timers.rearm()
        if seen[-1] == [TimerAction.GIVE_UP]:
            break
    retries = [a for a in seen if TimerAction.RETRANSMIT_HANDSHAKE in a]
    assert len(retries) == MAX_TIMER_HANDSHAKES + 1 and seen[-1] == [TimerAction.GIVE_UP]
    resolves = [i + 1 for i, a in enumerate(retries) if TimerAction.RESOLVE_ENDPOINT in a]
    assert resolves == list(range(RESOLVE_EVERY_ATTEMPTS, MAX_TIMER_HANDSHAKES + 2, RESOLVE_EVERY_ATTEMPTS))
    assert all(a[-1] == TimerAction.RETRANSMIT_HANDSHAKE for a in retries)
    # giving up arms the zeroing of whatever key material is left
    assert t.t_zero_key_material == now + 3 * REJECT_AFTER_TIME
    assert now == (MAX_TIMER_HANDSHAKES + 2) * (REKEY_TIMEOUT + 0.25)


def test_each_rule_sees_what_the_previous_action_did() -> None:
    t, q = _timers()
    t.data_received(0.0)  # passive keepalive due at 10 s
    t.data_sent(0.0)  # new handshake due at 15.25 s
    now = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 1
    gen = t.expire(now)
    assert next(gen) is TimerAction.SEND_KEEPALIVE
    t.any_authenticated_packet_received()  # as if carrying out the first action had heard from the peer
    assert list(gen) == []  # the new-handshake rule, checked after it, no longer fires


def test_persistent_keepalive_connects_at_once_when_set_and_stops_when_cleared() -> None:
    t, q = _timers()
    t.set_persistent_keepalive(25)
    assert q.peek() == 0.0 and list(t.expire(0.0)) == [TimerAction.PERSISTENT_KEEPALIVE]
    t.any_authenticated_packet_traversal(1.0)
    t.rearm()
    assert q.peek() == 26.0
    t.set_persistent_keepalive(0)
    assert q.peek() is None and list(t.expire(100.0)) == []


def _imports(path: Path, package: str) -> set[str]:
    """Modules of `package` that `path` imports, TYPE_CHECKING blocks included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package + "."):
            out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[2] for a in node.names if a.name.startswith(package + ".")}
    return out


def test_the_wireguard_modules_import_each_other_without_a_cycle() -> None:
    root = Path(wiregate.wireguard.__file__).parent
    graph = {p.stem: _imports(p, "wiregate.wireguard") for p in root.glob("*.py")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(mod: str, path: list[str]) -> None:
        if state.get(mod) == 2 or cycle:
            return
        if state.get(mod) == 1:
            cycle.extend(path[path.index(mod):] + [mod])
            return
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            visit(dep, path + [mod])
        state[mod] = 2

    for mod in sorted(graph):
        visit(mod, [])
    assert not cycle, " -> ".join(cycle)
