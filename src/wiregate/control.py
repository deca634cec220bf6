"""The local control socket of a running `wiregate run`: one JSON request line in, one JSON response line out.

    server = await ControlServer.start(path, handler)   # unix socket, mode 0600, directory 0750
    reply = request(path, {"cmd": "status"})             # from `wiregate status` (blocking client)

Reads are bounded in size (MAX_REQUEST bytes) and time (REQUEST_TIMEOUT); the number of clients at once is capped.
Requests: {"cmd": "status"} -> the node's status (a wiregate.status.NodeStatus, written by status.to_json and read
back by `node_status`); {"cmd": "reload"} -> re-read the file (as SIGHUP does); {"cmd": "ping"} ->
{"ok": true, "pid": N}. Errors come back as {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from wiregate.errors import WiregateError
from wiregate.status import NodeStatus, from_json, to_json

log = logging.getLogger("wiregate.control")

MAX_REQUEST = 64 * 1024
MAX_RESPONSE = 16 * 1024 * 1024
REQUEST_TIMEOUT = 5.0
MAX_CLIENTS = 8

# a reply's values may be typed status values (wiregate.status): they are written with status.to_json
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlServer:
    """A unix-socket JSON server; `handler(request) -> response` runs in the node's event loop."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.server: asyncio.AbstractServer | None = None
        self.clients = 0

    @classmethod
    async def start(cls, path: Path, handler: Handler) -> ControlServer:
        """Bind the socket (refusing one another live process answers on) and start serving."""
        self = cls(path, handler)
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX)
            probe.settimeout(1.0)
            try:
                probe.connect(str(path))
                raise WiregateError(f"control socket {path}: another wiregate is running with this name")
            except (TimeoutError, ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)  # left over from a crash
            finally:
                probe.close()
        old = os.umask(0o177)  # the socket is born 0600: only root (the owner) may talk to it
        try:
            self.server = await asyncio.start_unix_server(self._client, str(path), limit=MAX_REQUEST + 1)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        return self

    async def close(self) -> None:
        """Stop serving and remove the socket file."""
        if self.server is not None:
            self.server.close()
            self.server = None
            self.path.unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.clients >= MAX_CLIENTS:
            writer.close()
            return
        self.clients += 1
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            except (TimeoutError, ValueError, asyncio.LimitOverrunError):
                reply: dict[str, Any] = {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes or slower "
                                                              f"than {REQUEST_TIMEOUT}s"}
            else:
                reply = await self._answer(line)
            # a typed status (wiregate.status) in the reply goes out in its JSON shape
            writer.write(json.dumps(to_json(reply), default=str).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self.clients -= 1
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_REQUEST:
            return {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"}
        try:
            req = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not one line of JSON"}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": 'request must be an object with "cmd"'}
        try:
            return await self.handler(req)
        except WiregateError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a failing request must not kill the server
            log.exception("control: %s failed", req.get("cmd"))
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}


def request(path: Path, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to a running node and return its reply; WiregateError when nobody answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except FileNotFoundError:
            raise WiregateError(f"control socket {path}: not found (is `wiregate run` running?)") from None
        except ConnectionRefusedError:
            raise WiregateError(f"control socket {path}: nobody answers (stale socket?)") from None
        except PermissionError:
            raise WiregateError(f"control socket {path}: permission denied (run as root)") from None
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_RESPONSE:
                raise WiregateError(f"control socket {path}: reply larger than {MAX_RESPONSE} bytes")
    except TimeoutError:
        raise WiregateError(f"control socket {path}: no reply within {timeout}s") from None
    finally:
        s.close()
    try:
        reply = json.loads(buf)
    except ValueError:
        raise WiregateError(f"control socket {path}: reply is not JSON") from None
    if not isinstance(reply, dict):
        raise WiregateError(f"control socket {path}: reply is not a JSON object")
    return reply


def node_status(path: Path, timeout: float = 10.0) -> tuple[NodeStatus, dict[str, Any]]:
    """The status of the node answering on `path`, typed and as it came (`wiregate status --json` prints that);
    WiregateError when it cannot tell (nobody answers, an error, a reply without the status shape)."""
    reply = request(path, {"cmd": "status"}, timeout=timeout)
    if not reply.get("ok"):
        raise WiregateError(f"status: {reply.get('error', 'failed')}")
    raw = reply.get("status")
    if not isinstance(raw, dict):
        raise WiregateError(f"control socket {path}: the status reply has no status object")
    return from_json(NodeStatus, raw), raw


def answers(path: Path, timeout: float = 2.0) -> int | None:
    """The pid of the node answering on the control socket `path`; None when nobody does (no socket, or a stale one
    left by a killed run). A node too old to say its pid gives 0."""
    try:
        reply = request(path, {"cmd": "ping"}, timeout=timeout)
    except WiregateError:
        return None
    pid = reply.get("pid")
    return pid if isinstance(pid, int) else 0
