"""What a new user hits on day one (issue 10), each with the files as `init` / `site add` / `join` write them.

The README walk itself is tests/system/test_getting_started.py; these are the regression tests of the single
defects, fast where the behaviour allows (pure builders, the CLI in a child process) and in namespaces where it
takes a running node (wiregate.testing.userhost: a namespace with its own /run, so the default socket paths do not
meet anything else on this machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.conftest import wiregate
from wiregate.config import load, loads, pairing
from wiregate.errors import ConfigError
from wiregate.runner import ingress_config, tunnel_spec
from wiregate.tunnel import kernel_has_wireguard, make_tunnel

GW_ENDPOINT = "198.51.100.1"


def _pair(tmp_path: Path, **join) -> tuple[Path, Path]:
    """init gateway -> site add home -> join, all defaults (as README "Getting started")."""
    gw = pairing.init_gateway(tmp_path / "vps", GW_ENDPOINT)
    tok = pairing.site_add(gw, "home").token
    return gw, pairing.join(tok, tmp_path / "home", **join)


# -- 1: reload with tunnel mode "auto" --------------------------------------------------------------------------
def test_reload_of_the_files_as_init_and_join_wrote_them_keeps_the_same_tunnel(tmp_path):
    for path in _pair(tmp_path):
        cfg = load(path)
        assert cfg.tunnel.mode == "auto"
        tunnel = make_tunnel(tunnel_spec(cfg))  # not started: only what a reload compares
        assert tunnel.mode in ("builtin", "kernel")  # "auto" resolved for the device
        tunnel._check_same(tunnel_spec(load(path)))  # the same file again: nothing that needs a restart
        with pytest.raises(ConfigError, match=r"tunnel.mode: changed from 'auto' to 'builtin'"):
            tunnel._check_same(tunnel_spec(loads(path.read_text().replace(
                '# mode = "auto"', 'mode = "builtin"'), path.parent)))


# -- 2: the kernel-WireGuard probe ------------------------------------------------------------------------------
def test_kernel_wireguard_is_found_from_sys_and_the_module_lists_without_netlink(tmp_path):
    sys_module, lib = tmp_path / "sys" / "module", tmp_path / "lib" / "modules"
    (sys_module / "tun").mkdir(parents=True)
    (lib / "6.1.0").mkdir(parents=True)
    assert not kernel_has_wireguard(sys_module, lib, "6.1.0")
    (lib / "6.1.0" / "modules.dep").write_text("kernel/drivers/net/tun.ko:\n")
    assert not kernel_has_wireguard(sys_module, lib, "6.1.0")
    (lib / "6.1.0" / "modules.dep").write_text("kernel/drivers/net/wireguard/wireguard.ko.zst: "
                                               "kernel/lib/crypto/libchacha20poly1305.ko.zst\n")
    assert kernel_has_wireguard(sys_module, lib, "6.1.0")  # loadable: creating the link loads it
    (lib / "6.1.0" / "modules.dep").unlink()
    (lib / "6.1.0" / "modules.builtin").write_text("kernel/drivers/net/wireguard/wireguard.ko\n")
    assert kernel_has_wireguard(sys_module, lib, "6.1.0")
    (lib / "6.1.0" / "modules.builtin").unlink()
    (sys_module / "wireguard").mkdir()
    assert kernel_has_wireguard(sys_module, lib, "6.1.0")  # loaded


@pytest.mark.netns
@pytest.mark.timeout(60)
def test_run_in_auto_mode_under_uvloop_logs_no_error_and_no_traceback(lab, tmp_path):
    from wiregate.testing.userhost import UserHost

    vps = UserHost.make(lab, "v", tmp_path)
    gw, _ = _pair(tmp_path)
    log = tmp_path / "gateway.log"
    proc = vps.start_node(gw, log)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    text = log.read_text()
    assert "uvloop event loop" in text and "(builtin mode" in text, text
    assert " ERROR " not in text and "Traceback" not in text and "never retrieved" not in text, text


# -- 8: did you mean; one convention for `check` errors ----------------------------------------------------------
@pytest.mark.parametrize("where,typo,meant", [
    ("route", "send_prxy", "send_proxy"),
    ("route", "targt", "target"),
    ("listener", "lisen", "listen"),
    ("tunnel", "gateway_adress", "gateway_address"),
    ("top", "tunel", "tunnel"),
])
def test_a_misspelt_key_gets_a_did_you_mean(tmp_path, where, typo, meant):
    _, home = _pair(tmp_path)
    text, extra = home.read_text(), SNI_ONLY
    if where == "route":  # an extra misspelt key (a required one misspelt would be "missing")
        extra = extra.replace('target = "127.0.0.1:8443"\n', f'target = "127.0.0.1:8443"\n{typo} = "v2"\n')
    elif where == "listener":
        extra = extra.replace('name = "https"\n', f'name = "https"\n{typo} = "tunnel:8443"\n')
    elif where == "tunnel":
        text = text.replace("\ngateway_address = ", f"\n{typo} = ")
    else:
        text = text.replace("\n[tunnel]\n", f"\n[{typo}]\n")
    home.write_text(text + extra)
    r = wiregate("check", str(home))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    path = {"route": "listeners[0].routes[0].", "listener": "listeners[0].", "tunnel": "tunnel.", "top": ""}[where]
    assert r.stderr.strip() == f"wiregate: error: {home}: {path}{typo}: unknown key (did you mean {meant!r}?)"


def test_check_reports_config_and_key_file_errors_the_same_way(tmp_path):
    gw, _ = _pair(tmp_path)
    good = gw.read_text()
    gw.write_text(good.replace("listen_port = 51820", "listen_port = 99999"))
    bad_config = wiregate("check", str(gw))
    gw.write_text(good)
    os.chmod(gw.parent / "gateway.key", 0o644)
    bad_key = wiregate("check", str(gw))
    for r, what in ((bad_config, "tunnel.listen_port: 99999"), (bad_key, "tunnel.private_key_file: ")):
        assert (r.returncode, r.stdout) == (2, ""), r
        assert r.stderr.startswith(f"wiregate: error: {gw}: {what}") and len(r.stderr.splitlines()) == 1, r.stderr
    os.chmod(gw.parent / "gateway.key", 0o600)
    r = wiregate("check", str(gw))
    assert r.returncode == 0 and r.stdout.startswith(f"{gw}: ok") and r.stderr == ""


# -- 9: run twice, status into a closed pipe, status after a SIGKILL --------------------------------------------
def test_output_into_a_pipe_nobody_reads_ends_without_a_traceback():
    r_fd, w_fd = os.pipe()
    os.close(r_fd)  # like `| head -3` once head has gone: every write fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "wiregate", "check", "--schema"], stdout=w_fd,
                              stderr=subprocess.PIPE, text=True, timeout=30, check=False)
    finally:
        os.close(w_fd)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 128 + signal.SIGPIPE


@pytest.mark.netns
@pytest.mark.timeout(90)
def test_two_nodes_on_one_host_run_twice_status_piped_and_after_a_sigkill(lab, tmp_path):
    from wiregate.testing.userhost import UserHost

    host = UserHost.make(lab, "v", tmp_path)
    gw, home = _pair(tmp_path)
    # gateway and home with the default files on one host: different interfaces, sockets and metrics ports
    gw_proc = host.start_node(gw, tmp_path / "gateway.log")
    home_proc = host.start_node(home, tmp_path / "home.log")
    r = host.cli("status")
    assert r.returncode == 2 and "several wiregate instances run (gateway, home); name one" in r.stderr, r.stderr

    again = host.cli("run", str(home))
    assert again.returncode == 2, again
    assert again.stderr.strip().splitlines()[-1] == (
        f"wiregate: error: home home: already running (pid {home_proc.pid}, control socket /run/wiregate/home.ctl)")
    assert "Traceback" not in again.stderr + again.stdout
    assert home_proc.poll() is None

    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        piped = subprocess.run(host.cmd([sys.executable, "-m", "wiregate", "status", "gateway"]), stdout=w_fd,
                               stderr=subprocess.PIPE, text=True, timeout=30, env=host.env,
                               check=False)
    finally:
        os.close(w_fd)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr

    gw_proc.send_signal(signal.SIGKILL)
    gw_proc.wait(10)
    assert (host.run_dir / "wiregate" / "gateway.ctl").exists()  # left behind by the killed run
    r = host.cli("status")  # the one instance that answers, not "several run"
    assert r.returncode == 0 and r.stdout.startswith(f"home home (pid {home_proc.pid}"), r.stdout + r.stderr
    home_proc.send_signal(signal.SIGKILL)
    home_proc.wait(10)
    r = host.cli("status")
    assert r.returncode == 2 and "no wiregate instance answers in /run/wiregate" in r.stderr, r.stderr


# -- 10: interface names, the unit `site add` names ---------------------------------------------------------------
def test_init_and_join_give_each_node_its_own_interface_and_take_one(tmp_path):
    gw, home = _pair(tmp_path)
    assert (load(gw).tunnel.interface, load(home).tunnel.interface) == ("wg-gateway", "wg-home")
    r = wiregate("init", "gateway", "--endpoint", GW_ENDPOINT, "--config-dir", str(tmp_path / "b"),
                 "--name", "vps-with-a-long-name", "--interface", "wgpub0")
    assert r.returncode == 0, r.stderr
    assert load(tmp_path / "b" / "gateway.toml").tunnel.interface == "wgpub0"
    r = wiregate("init", "gateway", "--endpoint", GW_ENDPOINT, "--config-dir", str(tmp_path / "c"),
                 "--name", "vps-with-a-long-name")
    assert load(tmp_path / "c" / "gateway.toml").tunnel.interface == "wg-vps-with-a-l"  # 15 characters at most
    tok = pairing.site_add(gw, "cabin").token
    r = wiregate("join", tok, "--config-dir", str(tmp_path / "d"), "--interface", "wgcabin")
    assert r.returncode == 0 and load(tmp_path / "d" / "home.toml").tunnel.interface == "wgcabin"
    r = wiregate("join", tok, "--config-dir", str(tmp_path / "e"), "--interface", "no/slash")
    assert r.returncode == 2 and r.stderr.startswith('wiregate: error: --interface: "no/slash": must be an interface')
    assert not (tmp_path / "e" / "home.toml").exists()


def test_site_add_names_the_unit_install_service_writes(tmp_path):
    gw = pairing.init_gateway(tmp_path / "vps", GW_ENDPOINT, name="edge")
    r = wiregate("site", "add", "home", "--config", str(gw))
    assert r.returncode == 0, r.stderr
    r2 = wiregate("install-service", str(gw), "--unit-dir", str(tmp_path / "units"), "--exe", "/usr/bin/wiregate")
    assert r2.returncode == 0, r2.stderr
    (unit,) = (tmp_path / "units").iterdir()
    assert unit.name == "wiregate-edge.service"
    assert f"systemctl reload {unit.stem} " in r.stderr, r.stderr


# -- 14: one SNI route is not a default route -------------------------------------------------------------------
SNI_ONLY = '''
[[listeners]]
name = "https"
listen = "tunnel:443"

[[listeners.routes]]
name = "blog"
sni = ["blog.example.org"]
target = "127.0.0.1:8443"
'''


def test_a_listener_with_one_sni_route_serves_only_that_name(tmp_path):
    from wiregate.config.export import traefik
    from wiregate.ingress.router import Router

    _, home = _pair(tmp_path)
    cfg = loads(home.read_text() + SNI_ONLY, home.parent)
    assert cfg.listeners[0].default_route == ""
    (ln,) = ingress_config(cfg).listeners
    router = Router(ln)
    assert router.for_sni("blog.example.org").name == "blog"
    assert router.for_sni("other.example.org") is None and router.for_sni(None) is None  # refused
    assert "HostSNI(`*`)" not in traefik(cfg)["dynamic.toml"]  # the Traefik export agrees


def test_a_route_without_sni_or_host_is_the_listeners_default_and_only_one_may_be(tmp_path):
    from wiregate.config.export import traefik
    from wiregate.ingress.router import Router

    _, home = _pair(tmp_path)
    two = home.read_text() + SNI_ONLY + '\n[[listeners.routes]]\nname = "rest"\ntarget = "127.0.0.1:9443"\n'
    cfg = loads(two, home.parent)
    assert cfg.listeners[0].default_route == "rest"
    router = Router(ingress_config(cfg).listeners[0])
    assert router.for_sni("other.example.org").name == "rest" and router.for_sni("blog.example.org").name == "blog"
    assert "HostSNI(`*`)" in traefik(cfg)["dynamic.toml"]
    with pytest.raises(ConfigError, match=r'listeners\[0\].routes\[2\]: "more": names no sni/host, like route'):
        loads(two + '\n[[listeners.routes]]\nname = "more"\ntarget = "127.0.0.1:9444"\n', home.parent)
    with pytest.raises(ConfigError, match=r"routes\[1\]: \"rest\": names no sni/host, so it would match nothing"):
        loads(two.replace('\nlisten = "tunnel:443"\n', '\nlisten = "tunnel:443"\ndefault_route = "blog"\n'),
              home.parent)


# -- 7: a wrong gateway_endpoint port is not silent --------------------------------------------------------------
def test_handshake_watch_warns_once_after_the_first_retries_and_says_when_it_comes():
    from wiregate.probe_policy import HANDSHAKE_WARN_AFTER, HandshakeWatch

    w = HandshakeWatch(started=100.0)
    assert [w.update(100.0 + t, False) for t in (0, 5, HANDSHAKE_WARN_AFTER - 0.1)] == [None, None, None]
    assert not w.waiting
    assert w.update(100.0 + HANDSHAKE_WARN_AFTER, False) == "warn" and w.waiting
    assert w.update(200.0, False) is None and w.waiting  # once
    assert w.update(201.0, True) == "ok" and not w.waiting
    assert w.update(300.0, False) is None  # done: a handshake was seen
    quiet = HandshakeWatch(started=0.0)
    assert quiet.update(3.0, True) is None and quiet.update(100.0, False) is None  # no warning, nothing to say


@pytest.mark.netns
@pytest.mark.timeout(90)
def test_wrong_gateway_port_is_warned_about_and_status_says_it_in_words(lab, tmp_path):
    from wiregate.testing.system import wait_for
    from wiregate.testing.userhost import UserHost

    vps, home_host = UserHost.make(lab, "v", tmp_path), UserHost.make(lab, "h", tmp_path)
    lab.link(vps.ns, f"{GW_ENDPOINT}/24", home_host.ns, "198.51.100.2/24")
    gw, home = _pair(tmp_path)
    good = home.read_text()
    assert f'gateway_endpoint = "{GW_ENDPOINT}:51820"' in good
    home.write_text(good.replace(f'"{GW_ENDPOINT}:51820"', f'"{GW_ENDPOINT}:51821"'))  # the user's typo
    vps.start_node(gw, tmp_path / "gateway.log")
    log = tmp_path / "home.log"
    proc = home_host.start_node(home, log)
    wait_for(lambda: "no handshake with the gateway" in log.read_text(), 30, 0.2)
    line = next(ln for ln in log.read_text().splitlines() if "no handshake" in ln)
    assert " WARNING wiregate.run: tunnel: no handshake with the gateway at 198.51.100.1:51821 " in line, line
    assert "check tunnel.gateway_endpoint" in line and "UDP port 51821" in line, line
    r = home_host.cli("status")
    assert r.returncode == 0 and "\nwarning: tunnel: no handshake with the gateway at 198.51.100.1:51821" in r.stdout
    home.write_text(good)  # fixed, and reloaded
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "handshake with the gateway done" in log.read_text(), 20, 0.2)
    r = home_host.cli("status")
    assert r.returncode == 0 and "warning" not in r.stdout, r.stdout


# -- 11: the unit's sandbox hides /tmp and /home: warn, and run the unit's commands as systemd would ---------------
def test_install_service_warns_for_every_file_the_units_sandbox_hides(tmp_path):
    from wiregate.cli.install_service import hidden_by_unit

    assert hidden_by_unit(Path("/home/alice/wg/home.key")) == "ProtectHome=yes"
    assert hidden_by_unit(Path("/root/gateway.toml")) == "ProtectHome=yes"
    assert hidden_by_unit(Path("/var/tmp/x.toml")) == "PrivateTmp=yes"
    assert hidden_by_unit(Path("/etc/wiregate/gateway.key")) is None and hidden_by_unit(Path("/tmpfoo")) is None
    link = tmp_path / "link"
    link.symlink_to("/home/alice")
    assert hidden_by_unit(Path("/etc/wiregate")) is None and hidden_by_unit(link / "k") == "ProtectHome=yes"

    gw, _ = _pair(tmp_path)  # under /tmp, as a user trying things out would have it
    r = wiregate("install-service", str(gw), "--unit-dir", str(tmp_path / "units"), "--exe", "/usr/bin/wiregate")
    assert r.returncode == 0 and (tmp_path / "units" / "wiregate-gateway.service").exists()
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert lines[0] == (f"wiregate: warning: wiregate-gateway.service will not start: the config file: "
                        f"'{gw.resolve()}': hidden from the service by PrivateTmp=yes (it sees a private, empty /tmp);"
                        " move it, e.g. to /etc/wiregate")
    assert lines[1].startswith("wiregate: warning: wiregate-gateway.service will not start: tunnel.private_key_file:")


# ProtectHome=yes / PrivateTmp=yes / RuntimeDirectory=wiregate as the service sees them (systemd is not running here)
# ($0 = a directory to keep visible, "" for none: see the test; $1 = where to hold it meanwhile)
UNIT_SANDBOX = ('keep="$0"; hold="$1"; shift; i=0; '
                'for k in $(echo "$keep" | tr ":" " "); do i=$((i+1)); mkdir -p "$hold/$i" && '
                'mount --bind "$k" "$hold/$i"; done; '
                'for d in /tmp /var/tmp /home /root; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done; '
                'i=0; for k in $(echo "$keep" | tr ":" " "); do i=$((i+1)); mkdir -p "$k" && '
                'mount --move "$hold/$i" "$k"; done; '
                "mkdir -p /run/wiregate /run/wireguard; mount -t tmpfs -o mode=0750 tmpfs /run/wiregate; "
                'mount -t tmpfs -o mode=0755 tmpfs /run/wireguard; exec "$@"')


def _service_section(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif line and not line.startswith("#") and section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def _exec_argv(value: str, mainpid: int = 0) -> list[str]:
    """A unit's Exec*= value as systemd runs it: the prefixes (+ - ! @ :) dropped, words split, $MAINPID put in."""
    import shlex

    return [w.replace("$MAINPID", str(mainpid)) for w in shlex.split(value.lstrip("+-!@:"))]


@pytest.mark.netns
@pytest.mark.timeout(60)
def test_the_units_commands_run_as_systemd_runs_them_see_their_files(lab, tmp_path):
    import shutil

    from wiregate.cli.install_service import hidden_by_unit
    from wiregate.demo.system import start_ready
    from wiregate.testing.system import wait_for

    ns = lab.netns("u")
    etc = Path("/run") / f"wgt-unit-{os.getpid()}"  # not hidden by the unit (/etc would do too, but is the host's)
    try:
        gw = pairing.init_gateway(etc, GW_ENDPOINT)
        pairing.site_add(gw, "home")
        r = wiregate("install-service", str(gw), "--unit-dir", str(tmp_path / "units"))
        assert r.returncode == 0, r.stderr
        svc = _service_section(tmp_path / "units" / "wiregate-gateway.service")
        # This machine's Python may itself live where the unit hides it (pyenv under /root), and so may this
        # checkout with its .venv (a clone under /tmp or /home): install-service must say so, for each; the test then
        # keeps those directories visible, so the rest (config, keys, run, reload) is tested.
        python_home = Path(os.path.realpath(sys.base_prefix))
        checkout = Path(os.path.realpath(sys.prefix)).parent  # the venv's directory: .venv and src/
        exe = Path(sys.executable).parent / "wiregate"
        expected = [what for what, path in (("the wiregate program (--exe)", exe),
                                            ("the wiregate program's interpreter", Path(sys.executable)))
                    if hidden_by_unit(path)]
        lines = r.stderr.splitlines()
        assert len(lines) == len(expected) and all(
            line.startswith(f"wiregate: warning: wiregate-gateway.service will not start: {what}: ")
            for line, what in zip(lines, expected, strict=True)), r.stderr
        keep = ":".join(str(d) for d in (python_home, checkout) if hidden_by_unit(d))

        def sandboxed(argv: list[str]) -> list[str]:
            return ns.cmd(["unshare", "--mount", "sh", "-c", UNIT_SANDBOX, keep, str(etc / "hold"), *argv])
        for pre in svc["ExecStartPre"]:  # mkdir /run/wireguard, then `wiregate check FILE`
            done = subprocess.run(sandboxed(_exec_argv(pre)), capture_output=True, text=True, timeout=30,
                                  check=False)
            assert done.returncode == 0, (pre, done.stderr)
        assert "ok (gateway 'gateway'" in done.stdout
        log = tmp_path / "unit.log"
        (start,) = svc["ExecStart"]

        def spawn(note: str) -> subprocess.Popen:
            with open(log, "wb") as out:
                return lab.spawn(None, sandboxed(_exec_argv(start)), stdout=out, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, NOTIFY_SOCKET=note))
        proc = start_ready(spawn, etc / "notify", "the unit's ExecStart", log, 30)
        (reload,) = svc["ExecReload"]
        subprocess.run(_exec_argv(reload, proc.pid), check=True, timeout=10)  # /bin/kill -HUP $MAINPID
        wait_for(lambda: "reload: applied" in log.read_text(), 10, 0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
        assert " ERROR " not in log.read_text()

        # the same command with the config under /tmp: what the warning said, the sandbox does
        tmp_gw, _ = _pair(tmp_path)
        hidden = subprocess.run(sandboxed([*_exec_argv(pre)[:2], str(tmp_gw)]), capture_output=True, text=True,
                                timeout=30, check=False)
        assert hidden.returncode == 2 and "cannot read: No such file or directory" in hidden.stderr, hidden.stderr
    finally:
        shutil.rmtree(etc, ignore_errors=True)


# -- 13: `pip install .` without setuptools' deprecation block -----------------------------------------------------
@pytest.mark.timeout(180)
def test_building_the_package_prints_no_deprecation_warning(tmp_path):
    import shutil

    root = Path(__file__).resolve().parents[2]
    src = tmp_path / "tree"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    shutil.copytree(root / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-v",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=170,
                       check=False)
    if r.returncode != 0 and "Could not find a version that satisfies the requirement setuptools" in r.stderr:
        pytest.skip("pip cannot fetch setuptools for the isolated build here (no index, no cache)")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "deprecated" not in out.lower() and "*" * 40 not in out, out[-3000:]
    (wheel,) = (tmp_path / "dist").glob("wiregate-*.whl")
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta.splitlines()
