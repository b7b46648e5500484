"""Two LiveKit nodes on one Redis, as native processes: the multi-node test's stack.

    redis --- livekit-a (own HTTP, ICE/TCP and UDP ports)
          \\-- livekit-b (own HTTP, ICE/TCP and UDP ports) --- agent-b (registered on B itself)
    front door (Caddy, tests/scaleout/Caddyfile): /api -> token server; /rtc, /agent,
    /twirp -> both nodes, round robin --- agent-lb (registered through it, as the chart's
    workers do through the LiveKit Service)

Both nodes run livekit-server with the configuration the Helm chart renders (its ConfigMap's
config.yaml, as LIVEKIT_CONFIG) and the environment its Deployment gives each pod (keys,
webhook API key, NODE_IP); only what two nodes on one host cannot share comes from each
node's environment: the HTTP, ICE/TCP, UDP and Prometheus ports.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scripts import stack
from tests.e2e.harness import ProcessStack, isolated_overrides
from tests.ports import free_port
from tests.helm.render import livekit_config

NODES = ("a", "b")
CADDYFILE = Path(__file__).with_name("Caddyfile")
#: Each node's ICE/UDP range: above the kernel's ephemeral ports, apart from the default 50000-60000.
UDP_RANGES = {"a": (61000, 61499), "b": (61500, 61999)}
#: livekit-server logs its node id once at start ("starting LiveKit server").
#: Two workers start side by side: on a busy machine importing livekit-agents takes minutes (s).
AGENT_START_TIMEOUT_S = 300
NODE_ID = re.compile(r'starting LiveKit server.*?"nodeID":\s*"(ND_\w+)"')


@dataclass(frozen=True)
class Node:
    """One livekit-server of the cluster."""

    name: str
    port: int
    tcp_port: int
    prometheus_port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def livekit_command(self) -> str:
        """livekit-server as the chart's pod runs it, with this node's ports (one host)."""
        udp_start, udp_end = UDP_RANGES[self.name]
        return (f"LIVEKIT_PORT={self.port} LIVEKIT_RTC_TCP_PORT={self.tcp_port} "
                f"LIVEKIT_RTC_PORT_RANGE_START={udp_start} LIVEKIT_RTC_PORT_RANGE_END={udp_end} "
                f"LIVEKIT_PROMETHEUS_PORT={self.prometheus_port} LIVEKIT_WEBHOOK_API_KEY=$LIVEKIT_API_KEY "
                "exec livekit-server --bind 127.0.0.1")


@dataclass(frozen=True)
class Worker:
    """An agent worker of the cluster and the LiveKit URL it registers at."""

    name: str
    livekit_url: str
    health_port: int
    ready_file: Path

    def command(self) -> str:
        return (f"LIVEKIT_URL={self.livekit_url} AGENT_HEALTH_PORT={self.health_port} AGENT_METRICS_PORT=0 "
                f"AGENT_READY_FILE={self.ready_file} exec python -m voice_agent start")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


class Cluster(ProcessStack):
    """The stack above, started and stopped process by process (ProcessStack's life cycle)."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, nodes: dict[str, Node], workers: dict[str, Worker]) -> None:
        super().__init__(env, log_dir)
        self.nodes = nodes
        self.workers = workers
        procfile = stack.procfile_commands()
        self.commands = {
            "redis": procfile["redis"],
            **{f"livekit-{n.name}": n.livekit_command() for n in nodes.values()},
            "token-server": procfile["token-server"],
            **{w.name: w.command() for w in workers.values()},
            "web": f"exec caddy run --adapter caddyfile --config {CADDYFILE}",
        }
        base = stack.health_checks(self.env)
        self.checks = {"redis": base["redis"], "token-server": base["token-server"]}
        for node in nodes.values():
            livekit = f"http://127.0.0.1:{node.port}/"
            self.checks[f"livekit-{node.name}"] = stack.HealthCheck(
                f"livekit-{node.name}", lambda u=livekit: _http_ok(u), f"GET {livekit}")
        for worker in workers.values():
            self.checks[worker.name] = stack.HealthCheck(
                worker.name, lambda w=worker: self.agent_ready(w), f"{worker.ready_file} and its health port")
        web = f"{self.web_url}/healthz"
        self.checks["web"] = stack.HealthCheck("web", lambda: _http_ok(web), f"GET {web}")

    @staticmethod
    def agent_ready(worker: Worker) -> bool:
        ready = stack.agent_worker_health(worker.ready_file)
        return ready is not None and _http_ok(f"http://127.0.0.1:{ready[1]}/")

    def node_id(self, name: str) -> str:
        """The LiveKit node id of livekit-<name>'s current process (from its log)."""
        ids = NODE_ID.findall((self.log_dir / f"livekit-{name}.log").read_text(errors="replace"))
        if not ids:
            raise LookupError(f"livekit-{name} has not logged its node id")
        return ids[-1]


def cluster_env(state_dir: Path, model_base_url: str, model_ca_file: str) -> tuple[dict[str, str], dict[str, Node]]:
    """The cluster's environment and nodes: isolated ports, the chart's LiveKit configuration."""
    overrides = isolated_overrides(state_dir, model_base_url, model_ca_file)
    nodes = {name: Node(name, free_port(), free_port(), free_port()) for name in NODES}
    overrides["LIVEKIT_PORT"] = str(nodes["a"].port)
    env = stack.build_env(env_file=None, overrides=overrides)
    # The shipped configuration: rendered by the chart with this stack's Redis and token server.
    env["LIVEKIT_CONFIG"] = livekit_config({
        "redis.enabled": False,
        "redis.external.address": env["REDIS_HOST"],
        "livekit.webhookUrls": [f"http://127.0.0.1:{env['TOKEN_SERVER_PORT']}/api/livekit/webhook"],
    })
    env["NODE_IP"] = "127.0.0.1"
    env["LIVEKIT_NODES"] = " ".join(f"127.0.0.1:{n.port}" for n in nodes.values())
    # The front door is the only URL anyone is given (server_url: the token server derives it).
    env["LIVEKIT_URL"] = f"ws://127.0.0.1:{env['WEB_PORT']}"
    return env, nodes


@contextmanager
def running_cluster(state_dir: Path, log_dir: Path, model_base_url: str, model_ca_file: str) -> Iterator[Cluster]:
    """Every process of the cluster, started in order and healthy; all stopped on exit."""
    env, nodes = cluster_env(state_dir, model_base_url, model_ca_file)
    workers = {
        "agent-lb": Worker("agent-lb", env["LIVEKIT_URL"], free_port(), state_dir / "agent-lb.ready"),
        "agent-b": Worker("agent-b", nodes["b"].url, free_port(), state_dir / "agent-b.ready"),
    }
    cluster = Cluster(env, log_dir, nodes, workers)
    try:
        cluster.start(["redis", "livekit-a", "livekit-b", "token-server", "web"])
        cluster.start(list(workers), timeout_s=AGENT_START_TIMEOUT_S)
        yield cluster
    finally:
        cluster.close()
