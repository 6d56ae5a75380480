"""Which Ray a batch uses: a loopback head is joined on loopback, a port that is not Ray fails in
seconds, and without --ray-address an embedded Ray of our own starts on loopback whatever
cluster Ray's temp folder still names. Every Ray here lives in a subprocess (this session's
one embedded Ray is test_batch_ray's) and talks to 127.0.0.1 only: each driver carries a
tripwire that stops it before Ray dials any other address."""

from __future__ import annotations

import inspect
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from engine.batch.workers import (
    AUTH_MODE_ENV,
    CONNECT_TIMEOUT_S,
    ClusterError,
    _local_token_sent,
    start_ray,
)

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]
DEAD_PROXY = "http://127.0.0.1:9"  # Ray's usage module probes cloud metadata over HTTP


def listening(root) -> list[str]:
    """'ip:port name' of each TCP socket that ``root`` or a process under it listens on."""
    import ipaddress

    import psutil

    procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in procs:
            try:
                name = procs[conn.pid].name()
            except psutil.Error:
                name = "?"
            ip = ipaddress.ip_address(conn.laddr.ip)  # an IPv6 socket may hold an IPv4 one
            found.append(f"{getattr(ip, 'ipv4_mapped', None) or ip}:{conn.laddr.port} {name}")
    return sorted(found)


# Run in a fresh Python: stop Ray before it resolves any address off loopback, then report
# where the driver and its cluster really are.
DRIVER = inspect.getsource(listening) + r"""
import json, os, sys
import psutil
import ray
from ray._private import services
from engine.batch.workers import is_loopback, start_ray

def tripwire(name):
    real = getattr(services, name)
    def checked(*args, **kwargs):
        out = real(*args, **kwargs)
        if out is None:  # no cluster to join: a local Ray starts
            return out
        host = out.rpartition(":")[0] if name == "canonicalize_bootstrap_address" else out
        if not is_loopback(host):
            raise SystemExit(f"tripwire: Ray would dial {out}")
        return out
    setattr(services, name, checked)

for name in ("canonicalize_bootstrap_address", "resolve_ip_for_localhost"):
    tripwire(name)
address = sys.argv[1] or None
start_ray(address, 2)
auth_env = os.environ.get("RAY_AUTH_MODE")  # start_ray leaves the process as it found it
context = ray.get_runtime_context()
node = ray.remote(num_cpus=0)(lambda: ray.util.get_node_ip_address()).remote()
print("RESULT", json.dumps({"gcs": context.gcs_address, "node_id": context.get_node_id(),
      "node_ip": ray.util.get_node_ip_address(), "task_ip": ray.get(node, timeout=60),
      "cpus": ray.cluster_resources().get("CPU"), "auth_env": auth_env,
      "nodes": [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]],
      "listening": listening(psutil.Process())}))
ray.shutdown()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(temp: Path, **extra: str) -> dict:
    """Ray's environment: its temp folder, and its token in there (not ~/.ray/auth_token, whose
    folder others can read): a head there turns token authentication on."""
    env = {k: v for k, v in os.environ.items() if k not in (
        "RAY_ADDRESS", "no_proxy", "NO_PROXY", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
        "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    token = temp / "auth_token"
    if not token.is_file():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))  # as Ray's own token generator
    env.update(RAY_TMPDIR=str(temp), RAY_USAGE_STATS_ENABLED="0", http_proxy=DEAD_PROXY,
               HTTP_PROXY=DEAD_PROXY, PYTHONPATH=str(ROOT), RAY_AUTH_TOKEN_PATH=str(token),
               **extra)
    return env


def run_driver(address: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", DRIVER, address], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.fixture(scope="module")
def loopback_head(tmp_path_factory):
    """`ray start --head --node-ip-address 127.0.0.1`, kept there: Ray 2.60 itself rewrites a
    loopback --node-ip-address to the network address unless its single-machine switch is
    off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which a head alone accepts)."""
    temp = tmp_path_factory.mktemp("rayhead")
    port = free_port()
    env = ray_env(temp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    ray_cli = Path(sys.executable).with_name("ray")
    log = (temp / "head.log").open("w")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "1", "--include-dashboard=false"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        current = temp / "ray" / "ray_current_cluster"
        while not (current.is_file() and current.read_text().strip()):
            assert head.poll() is None and time.monotonic() < deadline, (
                (temp / "head.log").read_text()[-3000:])
            time.sleep(0.2)
        assert current.read_text().strip() == f"127.0.0.1:{port}"
        # The driver as a user runs it: without the head's switch, so start_ray keeps it there
        yield port, ray_env(temp), head
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray stops its own processes
        try:
            head.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        log.close()


def test_ray_head_on_loopback_is_joined_on_loopback(loopback_head):
    """The head has token authentication on (its token is at hand): joining it sends it."""
    import psutil

    port, env, head = loopback_head
    seen = run_driver(f"127.0.0.1:{port}", env)
    assert seen["gcs"] == f"127.0.0.1:{port}"
    assert seen["node_ip"] == seen["task_ip"] == "127.0.0.1"
    assert seen["nodes"] == ["127.0.0.1"] and seen["cpus"] == 1.0  # the head's, not ours
    assert seen["auth_env"] is None  # token mode was not left on for the driver's children
    sockets = listening(psutil.Process(head.pid)) + seen["listening"]
    assert sockets and all(s.startswith("127.0.0.1:") for s in sockets), sockets


def test_ray_without_its_token_set_up_is_a_cluster_error(monkeypatch):
    """Sending a local head its token uses a private Ray function: another Ray may lack it."""
    monkeypatch.setitem(sys.modules,
                        "ray._private.authentication.authentication_token_setup", None)
    before = os.environ.get(AUTH_MODE_ENV)
    with pytest.raises(ClusterError) as info, _local_token_sent("127.0.0.1:6379"):
        pass
    message = str(info.value)
    assert "127.0.0.1:6379" in message and "requirements.txt" in message
    assert "\n" not in message and os.environ.get(AUTH_MODE_ENV) == before


def test_ray_without_address_starts_its_own_on_loopback_past_a_stale_cluster():
    """A head stopped uncleanly leaves ray_current_cluster; RAY_ADDRESS may name one too."""
    stale = f"127.0.0.1:{free_port()}"
    # Ray's socket paths under its temp folder must fit AF_UNIX's 107 bytes: a short one
    with tempfile.TemporaryDirectory(prefix="t2e-ray-") as temp:
        (Path(temp) / "ray").mkdir()
        (Path(temp) / "ray" / "ray_current_cluster").write_text(stale)
        seen = run_driver("", ray_env(Path(temp), RAY_ADDRESS=stale))
    host, _, port = seen["gcs"].rpartition(":")
    assert host == "127.0.0.1" and seen["gcs"] != stale
    assert seen["node_ip"] == seen["task_ip"] == "127.0.0.1"
    assert seen["nodes"] == ["127.0.0.1"] and seen["cpus"] == 2.0  # sized for 2 workers
    assert seen["listening"] and all(s.startswith("127.0.0.1:") for s in seen["listening"]), (
        seen["listening"])


@pytest.fixture(params=["http", "silent"])
def not_ray_port(request):
    """A live loopback port that is not Ray: a web server, or one that never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.2)
                try:
                    conn.recv(1024)
                    if request.param == "http":
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    while not stop.is_set():  # hold it open, as a live service does
                        try:
                            if not conn.recv(1024):
                                break
                        except TimeoutError:
                            continue
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], request.param
    stop.set()
    thread.join(timeout=5)
    server.close()


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_ray_address_of_a_port_that_is_not_ray_fails_in_seconds(not_ray_port, scheme):
    port, kind = not_ray_port
    start = time.monotonic()
    with pytest.raises(ClusterError) as info:
        start_ray(f"{scheme}127.0.0.1:{port}", 2)
    assert time.monotonic() - start < 2 * CONNECT_TIMEOUT_S + 2
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "not a Ray cluster" in message
    assert ("HTTP/1.1 400" if kind == "http" else "no answer") in message
    assert "\n" not in message
