"""A real ACME CA for the tests: Debian's pebble (Let's Encrypt's RFC 8555 test server) with pebble-challtestsrv as
its DNS, both in the lab's "internet" namespace (the client namespace of wiregate.testing.system).

    pb = Pebble(lab, sl.client, workdir, ip=CLIENT_IP, resolve_to=VPS_PUBLIC_IP)
    pb.start(validity=None)        # every name resolves (for pebble's validation) to the gateway's public address
    pb.directory, pb.ca_bundle      # what the home [acme] table needs
    pb.root_pem()                   # pebble's issuing root, from its management endpoint (/roots/0)
    pb.stop()

pebble's own HTTPS certificate is made here (cryptography) for `ip`; pebble's VA validates http-01 on port 80 and
tls-alpn-01 on port 443 of the address the name resolves to (the gateway's relay), as Let's Encrypt does.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

from wiregate.testing.dns import Named, TsigKey, zone_text
from wiregate.testing.netns import Lab, Netns
from wiregate.testing.peers import stop, which

ACME_PORT = 14000
MANAGEMENT_PORT = 15000
DNS_PORT = 8053
CHALLENGE_ZONE = "acme.vps.example.net"  # the gateway's [acme_dns] zone in the DNS-01 wiring


def _exe(name: str) -> str:
    path = which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (Debian package pebble)")
    return path


def _tls_files(d: Path, ip: str) -> tuple[Path, Path, Path]:
    """(CA cert, server cert, server key) for pebble's HTTPS on `ip`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wiregate test pebble CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = d / "pebble-ca.pem", d / "pebble-cert.pem", d / "pebble-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


class Pebble:
    """pebble + pebble-challtestsrv in one namespace (see module docstring)."""

    def __init__(self, lab: Lab, ns: Netns, workdir: Path, *, ip: str, resolve_to: str) -> None:
        self.lab, self.ns, self.ip, self.resolve_to = lab, ns, ip, resolve_to
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_bundle, self.cert, self.key = _tls_files(self.dir, ip)
        self.proc: subprocess.Popen | None = None
        self.dns_proc: subprocess.Popen | None = None
        self.dnsserver: str | None = None
        self.log = self.dir / "pebble.log"

    @property
    def directory(self) -> str:
        return f"https://{self.ip}:{ACME_PORT}/dir"

    def start_dns(self) -> None:
        exe = _exe("pebble-challtestsrv")
        # every A query answers the gateway's public address; no AAAA (the lab has no IPv6 path)
        with open(self.dir / "challtestsrv.log", "ab") as log:
            self.dns_proc = self.lab.spawn(self.ns, [exe, "-dns01", f"{self.ip}:{DNS_PORT}", "-http01", "",
                                                     "-https01", "", "-tlsalpn01", "", "-management",
                                                     f"{self.ip}:8055", "-defaultIPv4", self.resolve_to,
                                                     "-defaultIPv6", ""], stdout=log, stderr=subprocess.STDOUT)
        self._wait_tcp(8055, self.dns_proc, 10.0, "pebble-challtestsrv")  # management up: its DNS is up too

    def _wait_tcp(self, port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
        """Wait (in the namespace) until `port` on our address takes connections."""
        code = ("import socket, sys, time\nend = time.monotonic() + float(sys.argv[3])\nwhile True:\n"
                "    try:\n        socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close(); break\n"
                "    except OSError:\n        if time.monotonic() > end: sys.exit(1)\n        time.sleep(0.05)\n")
        r = self.ns.run([sys.executable, "-c", code, self.ip, str(port), str(timeout)], check=False,
                        timeout=timeout + 10)
        if r.returncode != 0 or proc.poll() is not None:
            raise RuntimeError(f"{what} did not start:\n{self.log.read_text(errors='replace')[-2000:]}")

    def start(self, validity: int | None = None, timeout: float = 20.0, dnsserver: str | None = None) -> None:
        """Start (or restart) pebble; `validity`: certificate lifetime in seconds (pebble's default: 5 years);
        `dnsserver`: the resolver pebble's VA asks (default: pebble-challtestsrv, started here)."""
        if dnsserver is not None:
            self.dnsserver = dnsserver
        if self.dnsserver is None and self.dns_proc is None:
            self.start_dns()
        conf = {"pebble": {"listenAddress": f"{self.ip}:{ACME_PORT}",
                           "managementListenAddress": f"{self.ip}:{MANAGEMENT_PORT}",
                           "certificate": str(self.cert), "privateKey": str(self.key),
                           "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
                           "externalAccountBindingRequired": False}}
        if validity is not None:
            conf["pebble"]["certificateValidityPeriod"] = validity
        path = self.dir / "pebble-config.json"
        path.write_text(json.dumps(conf, indent=2))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        with open(self.log, "ab") as log:
            self.proc = self.lab.spawn(self.ns, [_exe("pebble"), "-config", str(path), "-dnsserver",
                                                 self.dnsserver or f"{self.ip}:{DNS_PORT}"], env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        self._wait_tcp(ACME_PORT, self.proc, timeout, "pebble")

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None

    def root_pem(self) -> bytes:
        """pebble's issuing root certificate, from its management endpoint (fetched in pebble's namespace)."""
        code = ("import ssl, sys, urllib.request; ctx = ssl.create_default_context(cafile=sys.argv[1]); "
                "sys.stdout.write(urllib.request.urlopen(sys.argv[2], context=ctx, timeout=10).read().decode())")
        r = self.ns.run([sys.executable, "-c", code, str(self.ca_bundle),
                         f"https://{self.ip}:{MANAGEMENT_PORT}/roots/0"])
        return r.stdout.encode()

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""



# The sample wiring of the tests and the benchmark: the gateway forwards 443 and 80; at home an ACME route per
# challenge (TLS-ALPN-01 to the PROXY-reading echo sample, HTTP-01 to the HTTP sample) and a port-80 listener.
GATEWAY_SERVICES = """
[[services]]
name = "https"
listen = ["{public}:443"]

[[services]]
name = "http"
listen = ["{public}:80"]
"""

HOME_LISTENERS = """
[[listeners]]
name = "https"
listen = "tunnel:443"

[[listeners.routes]]
name = "app"
sni = ["app.example"]
target = "127.0.0.1:7007"
send_proxy = "v2"
tls = "acme"

[[listeners.routes]]
name = "web"
sni = ["web.example"]
target = "127.0.0.1:8080"
http_headers = true
tls = "acme"
acme_challenge = "http-01"

[[listeners]]
name = "http"
listen = "tunnel:80"

[[listeners.routes]]
name = "www"
host = ["web.example"]
target = "127.0.0.1:8080"
http_headers = true
"""


def acme_table(pb: Pebble) -> str:
    """The home [acme] table for this pebble (its CA bundle trusted for the directory's HTTPS)."""
    return (f'\n[acme]\ndirectory = "{pb.directory}"\nemail = "admin@example.org"\nagree_tos = true\n'
            f'ca_bundle = "{pb.ca_bundle}"\n')


class AcmeSystem:
    """wiregate.testing.system.SystemLab + Pebble, wired: pebble and its DNS in the client ("internet") namespace,
    the VPS namespace routing between the internet and home so home reaches the CA on its own (not through the
    tunnel), the sample services at home, the gateway started. `start_home()` is left to the caller."""

    def __init__(self, lab: Lab, tmp: Path, *, validity: int | None = None, home: str = HOME_LISTENERS,
                 acme_extra: str = "", dns01: bool = False, acme_names: tuple[str, ...] = (),
                 tsig: TsigKey | None = None) -> None:
        from wiregate.testing.system import CLIENT_IP, VPS_IP, VPS_PUBLIC_IP, SystemLab

        self.sl = sl = SystemLab(lab, Path(tmp) / "sys")
        self.named: Named | None = None
        sl.vps.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        sl.home.run(["ip", "route", "add", "203.0.113.0/24", "via", VPS_IP])
        sl.client.run(["ip", "route", "add", "198.51.100.0/24", "via", VPS_PUBLIC_IP])
        self.pb = Pebble(lab, sl.client, Path(tmp) / "pebble", ip=CLIENT_IP, resolve_to=VPS_PUBLIC_IP)
        self.pb.start(validity=validity, dnsserver=f"{CLIENT_IP}:53" if dns01 else None)
        sl.pair()
        if acme_names:  # the gateway answers DNS-01 for this site's names (docs/acme-dns.md)
            text = sl.gateway_file.read_text()
            names = ", ".join(f'"{n}"' for n in acme_names)
            sl.gateway_file.write_text(text.replace('name = "home"\n', f'name = "home"\nacme_names = [{names}]\n', 1)
                                       + f'\n[acme_dns]\nzone = "{CHALLENGE_ZONE}"\nnameserver = "vps.example.net"\n'
                                       f'listen = ["{VPS_PUBLIC_IP}:53"]\n')
        sl.add_sample_services(gateway_extra=GATEWAY_SERVICES.format(public=VPS_PUBLIC_IP),
                               home_extra=home + acme_table(self.pb) + acme_extra)
        sl.samples_proc = lab.spawn(sl.home, [sys.executable, "-m", "wiregate.testing.samples", "--http",
                                              "127.0.0.1:8080", "--echo", "127.0.0.1:7007", "--proxy"],
                                    stdout=subprocess.PIPE, text=True)
        assert sl.samples_proc.stdout is not None
        if sl.samples_proc.stdout.readline().strip() != "ready":
            raise RuntimeError("sample services did not start")
        sl.start_gateway()
        if dns01:
            self.named = self._start_named(lab, Path(tmp) / "named", acme_names, tsig)

    def _start_named(self, lab: Lab, workdir: Path, acme_names: tuple[str, ...], tsig: TsigKey | None) -> Named:
        """BIND 9 in the internet namespace, pebble's resolver: every name of `.example` at the gateway, the zone
        example.net (the VPS, delegating the challenge zone to the gateway when `acme_names`) and the user's zone
        example.org (the CNAME `wiregate acme-dns records` prints; RFC 2136 updates with `tsig`)."""
        from wiregate.config import load
        from wiregate.config.model import GatewayConfig
        from wiregate.dnsserver.channel import challenge_label
        from wiregate.testing.system import CLIENT_IP, VPS_PUBLIC_IP

        net_records = f"vps IN A {VPS_PUBLIC_IP}\n"
        org_records = ""
        if acme_names:
            net_records += f"{CHALLENGE_ZONE}. IN NS vps.example.net.\n"
            gw = load(self.sl.gateway_file)
            assert isinstance(gw, GatewayConfig)
            key = next(s.public_key for s in gw.sites if s.name == "home")
            bases = dict.fromkeys(n.removeprefix("*.") for n in acme_names)
            org_records = "".join(f"_acme-challenge.{b}. IN CNAME {challenge_label(key, b)}.{CHALLENGE_ZONE}.\n"
                                  for b in bases)
        zones = {"example": zone_text("example", {"ns1.example.net.": ""}, f"* IN A {VPS_PUBLIC_IP}"),
                 "example.net": zone_text("example.net", {"ns1": CLIENT_IP}, net_records),
                 "example.org": zone_text("example.org", {"ns1.example.net.": ""}, org_records)}
        named = Named(lab, self.sl.client, workdir, CLIENT_IP, zones=zones, recursion=True, tsig=tsig,
                      update_zones=("example.org",) if tsig else ())
        named.start()
        return named

    def certificates(self) -> list[dict]:
        """The home's `status` certificate entries ([] while it is not up)."""
        try:
            return self.sl.status("home").get("certificates", [])
        except Exception:  # noqa: BLE001 - not up yet
            return []

    def wait_issued_and_failed(self, issued: str, failed: str, timeout: float = 60.0) -> None:
        """Wait until there are two certificates: `issued` obtained once by this run, `failed` with an error (each
        named by its first name)."""
        from wiregate.testing.system import wait_for

        def settled() -> bool:
            c = {x["names"][0]: x for x in self.certificates()}
            return len(c) == 2 and c[issued]["issued"] == 1 and bool(c[failed]["last_error"])
        try:
            wait_for(settled, timeout)
        except TimeoutError:
            raise AssertionError(f"{self.certificates()}\n{self.sl.log_tail('home', 5000)}") from None

    def wait_issued(self, n: int, timeout: float = 60.0, issued: int = 1) -> float:
        """Wait until `n` certificates have each been obtained `issued` times by this run, without an error."""
        from wiregate.testing.system import wait_for

        def done() -> bool:
            certs = self.certificates()
            return len(certs) == n and all(c["not_after"] and c["issued"] >= issued and not c["last_error"]
                                           for c in certs)
        try:
            return wait_for(done, timeout, interval=0.05)
        except TimeoutError:
            raise AssertionError(f"not issued: {json.dumps(self.certificates())}\nhome log:\n"
                                 f"{self.sl.log_tail('home', 4000)}\npebble:\n{self.pb.log_tail()}") from None
