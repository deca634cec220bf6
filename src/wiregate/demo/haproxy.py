"""A real HAProxy and a header-catching listener, for PROXY protocol interop tests and `wiregate proxy-demo`.

    with HAProxy(cfg, wait_for=[("127.0.0.1", port)]) as hap:   # haproxy -db -f cfg, ended by PID on exit
        ...
    with Catcher() as catcher:                                  # decodes what arrives with our Decoder
        got = catcher.next(timeout=5)                           # -> Caught(raw, header, payload)

Everything listens on loopback; ports come from free_port().
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wiregate.errors import WiregateError
from wiregate.proxyproto import Decoder, ProxyError, ProxyHeader
from wiregate.demo.procs import ensure, stop

_TCP_LISTEN = "0A"


def _proc_net_addr(host: str) -> str:
    """`host` as /proc/net/tcp{,6} print it: 32-bit words in host byte order, hex, upper case."""
    packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    words = (packed[i:i + 4] for i in range(0, len(packed), 4))
    return "".join((w[::-1] if sys.byteorder == "little" else w).hex().upper() for w in words)


def is_listening(host: str, port: int) -> bool:
    """True when a socket in this namespace is in LISTEN on `host`:`port` (or the wildcard address, same port).

    Read from /proc/net/tcp{,6} rather than by connecting: a probe connection would be relayed by HAProxy
    to the listener under test and show up there as a stray connection.
    """
    wanted = {f"{_proc_net_addr(host)}:{port:04X}", f"{_proc_net_addr('::' if ':' in host else '0.0.0.0')}:{port:04X}"}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if fields[3] == _TCP_LISTEN and fields[1] in wanted:
                        return True
        except OSError:
            continue
    return False


def wait_listening(host: str, port: int, timeout: float, proc: subprocess.Popen) -> None:
    """Wait until `host`:`port` is in LISTEN; raise WiregateError if `proc` exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while not is_listening(host, port):
        if proc.poll() is not None:
            raise WiregateError(f"haproxy exited with status {proc.returncode} before listening on port {port}")
        if time.monotonic() > deadline:
            raise WiregateError(f"haproxy did not listen on {host} port {port} within {timeout}s")
        time.sleep(0.02)


# Small, fixed limits: one thread, few connections, short timeouts so nothing lingers after a test.
HAPROXY_PREAMBLE = """global
    maxconn 64
    nbthread 1
    log stderr format short local0 info
defaults
    log global
    timeout connect 2s
    timeout client 5s
    timeout server 5s
"""


class HAProxyMissing(WiregateError):
    """haproxy is not installed (and could not be installed)."""


def find_haproxy(exe: str | None = None) -> str:
    """Path of the haproxy program (`exe` if given); HAProxyMissing with a one-line reason when there is none."""
    path = (exe if os.path.isfile(exe) and os.access(exe, os.X_OK) else None) if exe else ensure("haproxy", "haproxy")
    if not path:
        where = f" at {exe}" if exe else ""
        raise HAProxyMissing(f"haproxy is not installed{where} (Debian: apt-get install haproxy)")
    return path


def haproxy_version(exe: str) -> str:
    """`haproxy -v`'s version, e.g. "2.6.12-1+deb12u4"."""
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10).stdout
    parts = out.split()
    return parts[2] if len(parts) > 2 and parts[0] == "HAProxy" else "unknown"


class HAProxy:
    """`haproxy -db -f <cfg>` in the foreground; waits until every `wait_for` address accepts, stops by PID."""

    def __init__(self, config: str, wait_for: Sequence[tuple[str, int]] = (), *, timeout: float = 10.0,
                 exe: str | None = None) -> None:
        self.exe = exe
        self.config = HAPROXY_PREAMBLE + config
        self.wait_for = list(wait_for)
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self._dir: Path | None = None

    def __enter__(self) -> HAProxy:
        exe = find_haproxy(self.exe)
        self._dir = Path(tempfile.mkdtemp(prefix="wgt-haproxy-"))
        cfg = self._dir / "haproxy.cfg"
        cfg.write_text(self.config)
        self._log = open(self._dir / "haproxy.log", "wb")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            for host, port in self.wait_for:
                wait_listening(host, port, self.timeout, self.proc)
        except WiregateError as exc:
            tail = self.log().strip().splitlines()[-3:]
            self.__exit__(None, None, None)
            raise WiregateError(f"{exc}: {' | '.join(tail) or 'no output'}") from None
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def log(self) -> str:
        """What haproxy printed so far (its log goes to stderr)."""
        assert self._dir is not None
        return (self._dir / "haproxy.log").read_text(errors="replace")

    def __exit__(self, *exc) -> None:
        stop(self.proc)
        if self._dir is not None:
            self._log.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@dataclass(frozen=True, slots=True)
class Caught:
    """One connection seen by a Catcher: the header bytes as they came, the decoded header, and the payload."""

    raw: bytes
    header: ProxyHeader | None
    payload: bytes
    peer: tuple
    error: str | None = None


class Catcher:
    """A TCP listener on loopback that decodes a PROXY header on each connection with our Decoder.

    Reads in small slices (so headers are reassembled across reads), then the payload until the sender
    closes, `payload_len` bytes have come, or the read timeout passes.
    """

    def __init__(self, host: str = "127.0.0.1", *, payload_len: int = 0, read_size: int = 7, timeout: float = 5.0,
                 max_v2_length: int = 4096) -> None:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.payload_len, self.read_size = payload_len, read_size
        self.timeout, self.max_v2_length = timeout, max_v2_length
        self.caught: queue.Queue[Caught] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"catcher:{self.port}", daemon=True)

    def __enter__(self) -> Catcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def next(self, timeout: float = 5.0) -> Caught:
        """The next connection's result; raises TimeoutError when none came in time."""
        try:
            return self.caught.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no connection reached the listener on port {self.port} in {timeout}s") from None

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.caught.put(self._handle(conn, peer))

    def _handle(self, conn: socket.socket, peer: tuple) -> Caught:
        conn.settimeout(self.timeout)
        dec = Decoder(max_v2_length=self.max_v2_length)
        raw = bytearray()
        header = None
        try:
            while header is None:
                # small reads on purpose: the decoder must reassemble a header split over many reads
                chunk = conn.recv(self.read_size)
                if not chunk:
                    return Caught(bytes(raw), None, b"", peer, "closed before a whole header")
                raw += chunk
                header = dec.feed(chunk)
            payload = bytearray(dec.rest)
            while len(payload) < self.payload_len:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                payload += chunk
        except ProxyError as exc:
            return Caught(bytes(raw), None, b"", peer, str(exc))
        except OSError as exc:
            if header is None:
                return Caught(bytes(raw), None, b"", peer, f"socket: {exc}")
        return Caught(bytes(raw[: header.length]), header, bytes(payload), peer)


def http_get(host: str, port: int, prefix: bytes = b"", path: str = "/", timeout: float = 5.0,
             source: str | None = None) -> tuple[int, bytes]:
    """Send `prefix` (e.g. a PROXY header) then a one-shot HTTP/1.0 GET; return (status, body)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        s.sendall(prefix + f"GET {path} HTTP/1.0\r\nHost: wiregate.test\r\n\r\n".encode())
        data = bytearray()
        while len(data) < 65536:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise ConnectionError(f"no HTTP answer from {host}:{port}: {bytes(data[:60])!r}")
    return int(head.split(b" ", 2)[1]), body


@dataclass(frozen=True, slots=True)
class TestPKI:
    """Throw-away certificates for a TLS frontend: a CA, a server cert (EC P-256) and a client cert."""

    ca: Path           # CA certificate (PEM)
    server: Path       # server certificate + key (PEM, as HAProxy's `crt` wants)
    client_cert: Path  # client certificate (PEM)
    client_key: Path   # client key (PEM, 0600)
    server_name: str
    client_cn: str


def make_test_pki(directory: Path, server_name: str = "gw.wiregate.test",
                  client_cn: str = "client.wiregate.test") -> TestPKI:
    """Write a CA, a server and a client certificate under `directory` (keys 0600); valid for one day."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject: str, key, issuer: str, issuer_key, *, ca: bool = False, san: str | None = None):
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def write(path: Path, data: bytes, secret: bool = False) -> Path:
        path.write_bytes(data)
        if secret:
            path.chmod(0o600)
        return path

    pem = serialization.Encoding.PEM
    ca_key, srv_key, cli_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca_cert = cert("wiregate test CA", ca_key, "wiregate test CA", ca_key, ca=True)
    srv_cert = cert(server_name, srv_key, "wiregate test CA", ca_key, san=server_name)
    cli_cert = cert(client_cn, cli_key, "wiregate test CA", ca_key)
    directory.mkdir(parents=True, exist_ok=True)
    return TestPKI(
        ca=write(directory / "ca.pem", ca_cert.public_bytes(pem)),
        server=write(directory / "server.pem", srv_cert.public_bytes(pem) + pem_key(srv_key), secret=True),
        client_cert=write(directory / "client.pem", cli_cert.public_bytes(pem)),
        client_key=write(directory / "client.key", pem_key(cli_key), secret=True),
        server_name=server_name,
        client_cn=client_cn,
    )


def tls_client(host: str, port: int, pki: TestPKI, *, alpn: list[str] | None = None, payload: bytes = b"",
               timeout: float = 5.0) -> tuple[tuple, dict]:
    """Connect over TLS (SNI = pki.server_name, client certificate), send `payload`, close.

    Returns (our local address, facts about the session: version, cipher, alpn).
    """
    import ssl

    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as raw:
        raw.settimeout(timeout)
        raw.connect((host, port))
        local = raw.getsockname()[:2]
        with ctx.wrap_socket(raw, server_hostname=pki.server_name) as s:
            cipher = s.cipher()
            assert cipher is not None  # the handshake is done: wrap_socket connected
            facts = {"version": s.version(), "cipher": cipher[0], "alpn": s.selected_alpn_protocol()}
            s.sendall(payload)
            try:
                s.unwrap()
            except (OSError, ValueError):
                pass
    return local, facts
