"""Python grpcio's own xDS client (xds:/// targets) against a real kubedisco
agent (manifest source, --xds-addr) and grpcio servers on loopback.

Run by scripts/test with the venv scripts/prepare makes:
    python -m unittest -v tests/xds/python/test_xds.py
The agent is $KUBEDISCO_BIN, else $CARGO_TARGET_DIR/debug/kubedisco, else
target/debug/kubedisco.
"""

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
NAMESPACE = "e2e"
METHOD = "/kubedisco.test.Who/Am"


def agent_binary() -> str:
    if os.environ.get("KUBEDISCO_BIN"):
        return os.environ["KUBEDISCO_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    binary = Path(target) / "debug" / "kubedisco"
    if not binary.exists():
        raise unittest.SkipTest(f"no agent binary at {binary} (cargo build first)")
    return str(binary)


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class Agent:
    """A kubedisco agent on an address of its own, reading manifests from a
    temporary directory polled every 100 ms."""

    def __init__(self):
        self.binary = agent_binary()
        self.dir = tempfile.mkdtemp(prefix="kubedisco-xds-py-")
        ip = f"127.{64 + random.randrange(64)}.{random.randrange(256)}.{1 + random.randrange(254)}"
        self.http = f"{ip}:{free_port(ip)}"
        self.xds = f"{ip}:{free_port(ip)}"
        dns = f"{ip}:{free_port(ip)}"
        self.log = open(os.path.join(self.dir, "agent.log"), "w+")
        self.proc = subprocess.Popen(
            [self.binary, "agent", "--source", self.dir, "--manifest-poll-interval", "100ms",
             "--http-addr", self.http, "--dns-addr", dns, "--xds-addr", self.xds,
             "--shutdown-grace", "2s"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited during start-up: {self.tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.http}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent not ready after 30s: {self.tail()}")
            time.sleep(0.02)

    def bootstrap(self) -> str:
        return subprocess.run(
            [self.binary, "xds-bootstrap", "--xds-addr", self.xds, "--node-id", "python-e2e"],
            check=True, capture_output=True, text=True).stdout

    def write(self, name: str, content: str):
        tmp = os.path.join(self.dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(content)
        os.rename(tmp, os.path.join(self.dir, name))

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-6000:]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def manifest(name: str, endpoints: list[tuple[str, int, int]]) -> str:
    """A headless Service with port "grpc" and one EndpointSlice per
    (ip, port, weight) endpoint."""
    out = [f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n"
           "spec:\n  clusterIP: None\n  ports:\n  - {name: grpc, port: 9000}\n"]
    for i, (ip, port, weight) in enumerate(endpoints):
        out.append(
            f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
            f"  name: {name}-{i}\n  namespace: {NAMESPACE}\n"
            f"  labels: {{kubernetes.io/service-name: {name}}}\n"
            f"  annotations: {{kubedisco.io/weight: \"{weight}\"}}\n"
            f"addressType: IPv4\nports:\n- {{name: grpc, port: {port}, protocol: TCP}}\n"
            f"endpoints:\n- addresses: [{ip}]\n  conditions: {{ready: true}}\n")
    return "".join(out)


def start_server(ip: str):
    """A grpcio server whose one method answers with its own address, so the
    client can count who served each call (no generated code: raw bytes)."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    port = server.add_insecure_port(f"{ip}:0")
    me = f"{ip}:{port}".encode()
    handler = grpc.method_handlers_generic_handler(
        "kubedisco.test.Who", {"Am": grpc.unary_unary_rpc_method_handler(lambda req, ctx: me)})
    server.add_generic_rpc_handlers((handler,))
    server.start()
    return server, ip, port


class WeightsTest(unittest.TestCase):
    def setUp(self):
        self.agent = Agent()
        self.addCleanup(self.stop_agent)
        # grpcio reads its bootstrap when the first xds:/// channel is made.
        os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = self.agent.bootstrap()

    def stop_agent(self):
        if getattr(self._outcome, "success", True) is False or os.environ.get("KUBEDISCO_LOG"):
            print(self.agent.tail())
        self.agent.stop()

    def test_weights_are_honoured(self):
        import grpc

        servers = [start_server("127.0.30.2"), start_server("127.0.30.3")]
        for server, _, _ in servers:
            self.addCleanup(server.stop, None)
        (_, light_ip, light_port), (_, heavy_ip, heavy_port) = servers
        self.agent.write("echo.yaml", manifest(
            "echo", [(light_ip, light_port, 1), (heavy_ip, heavy_port, 3)]))
        light, heavy = f"{light_ip}:{light_port}", f"{heavy_ip}:{heavy_port}"

        channel = grpc.insecure_channel(f"xds:///echo.{NAMESPACE}:grpc")
        self.addCleanup(channel.close)
        who = channel.unary_unary(METHOD)

        # Bounded poll until both servers answer within a window.
        deadline = time.monotonic() + 30
        while True:
            seen = set()
            try:
                for _ in range(200):
                    seen.add(who(b"", timeout=2, wait_for_ready=True).decode())
            except grpc.RpcError as e:
                seen = {f"error: {e.code()}"}
            if seen == {light, heavy}:
                break
            self.assertLess(time.monotonic(), deadline, f"not served by both within 30s: {seen}")

        n = 4000
        counts = {light: 0, heavy: 0}
        for _ in range(n):
            counts[who(b"", timeout=5).decode()] += 1
        light_share, heavy_share = counts[light] / n, counts[heavy] / n
        print(f"python grpcio {grpc.__version__}: weights 1:3 over {n} RPCs: "
              f"{light_share:.4f} / {heavy_share:.4f}")
        self.assertAlmostEqual(light_share, 0.25, delta=0.02)
        self.assertAlmostEqual(heavy_share, 0.75, delta=0.02)


if __name__ == "__main__":
    unittest.main()
