"""Drives the compose stack (compose.yaml) under a real Docker engine for the compose tests.

`scripts/test-compose` prepares a project directory (a copy of this tree with a `.env`
from `scripts/init-env` and the images built) and passes it in `APPLIANCE_COMPOSE_DIR`,
with the compose command in `APPLIANCE_COMPOSE` (`docker compose` or `docker-compose`)
and the project name in `APPLIANCE_COMPOSE_PROJECT`. `ComposeStack` points that
directory's `.env` at free ports and the Gemini Live stand-in, brings the stack up,
waits for every healthcheck, and always takes it down again with its volumes.
"""

from __future__ import annotations

import json
import os
import shlex
import ssl
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from scripts.stack import parse_env_file
from tests.ports import free_port

#: The test's override file: mounts the stand-in's CA into the agent.
OVERRIDE = Path(__file__).with_name("compose.test.yaml")
#: Where Caddy keeps its internal CA's root certificate (the caddy-data volume).
CADDY_ROOT_CA = "/data/caddy/pki/authorities/local/root.crt"


def update_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Set `KEY=value` lines in a `.env` file, replacing existing ones and appending the rest."""
    lines = path.read_text(encoding="utf-8").splitlines()
    pending = dict(values)
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in pending:
            lines[i] = f"{key}={pending.pop(key)}"
    lines += [f"{key}={value}" for key, value in pending.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class ComposeStack:
    """One compose project, brought up from `project_dir` and always taken down with `down -v`.

    Args:
        project_dir: the directory holding `compose.yaml`, `.env` and the build contexts.
        compose: the compose command, e.g. ``["docker", "compose"]``.
        project: the compose project name (containers, volumes).
        log_dir: where `compose.log` (every service's output) and `timings.json` go.
        profiles: the compose profiles to run too (e.g. ``("telephony",)``).
    """

    def __init__(
        self, project_dir: Path, compose: list[str], project: str, log_dir: Path, profiles: tuple[str, ...] = ()
    ) -> None:
        self.dir = project_dir
        profile_args = [arg for name in profiles for arg in ("--profile", name)]
        self.compose = [*compose, *profile_args, "-p", project, "-f", "compose.yaml", "-f", str(OVERRIDE)]
        self.project = project
        self.log_dir = log_dir
        self.timings: dict[str, float] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_environment(cls, log_dir: Path, profiles: tuple[str, ...] = ()) -> ComposeStack | None:
        """The stack `scripts/test-compose` prepared, or None when not run by it."""
        project_dir = os.environ.get("APPLIANCE_COMPOSE_DIR")
        if not project_dir:
            return None
        compose = shlex.split(os.environ.get("APPLIANCE_COMPOSE", "docker compose"))
        project = os.environ.get("APPLIANCE_COMPOSE_PROJECT", "voice-appliance-test")
        return cls(Path(project_dir), compose, project, log_dir, profiles)

    # --- settings ---------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The project's `.env` as compose reads it."""
        return parse_env_file(self.dir / ".env")

    @property
    def origin(self) -> str:
        """The front door: `https://PUBLIC_HOST:HTTPS_PORT`."""
        env = self.env
        return f"https://{env['PUBLIC_HOST']}:{env['HTTPS_PORT']}"

    @property
    def token_url(self) -> str:
        """The token endpoint through the HTTPS front door."""
        return f"{self.origin}/api/token"

    def configure(self, model_base_url: str, model_ca_file: Path, extra: Mapping[str, str] = ()) -> None:
        """Point `.env` at free ports on this machine and at the Gemini Live stand-in."""
        ports = ("HTTPS_PORT", "HTTP_PORT", "WEB_HEALTH_PORT", "LIVEKIT_PORT", "LIVEKIT_RTC_TCP_PORT",
                 "REDIS_PORT", "TOKEN_SERVER_PORT", "LIVEKIT_PROMETHEUS_PORT", "AGENT_METRICS_PORT",
                 "PROMETHEUS_PORT")
        update_env_file(self.dir / ".env", {
            **{name: str(free_port()) for name in ports},
            "PUBLIC_HOST": "localhost",
            "LIVEKIT_NODE_IP": "127.0.0.1",
            "LIVEKIT_PUBLIC_URL": "",
            "GOOGLE_API_KEY": "stand-in-key",
            "GEMINI_BASE_URL": model_base_url,
            "STANDIN_CA_FILE": str(model_ca_file),
            "PROMETHEUS_SCRAPE_INTERVAL_S": "1",
            **dict(extra),
        })

    # --- life cycle -------------------------------------------------------------------

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the compose command with `args` in the project directory."""
        return subprocess.run(
            [*self.compose, *args], cwd=self.dir, capture_output=True, text=True, timeout=timeout, check=check
        )

    def up(self, timeout_s: float = 300) -> None:
        """`up -d` (images already built), then wait until every container is healthy (one-shot
        jobs: finished with status 0).

        Raises:
            RuntimeError: a container exited or stayed unhealthy; the message has the logs' tail.
        """
        started = time.monotonic()
        result = self.run("up", "-d", "--no-build", timeout=timeout_s, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"compose up failed:\n{result.stdout}\n{result.stderr}\n{self.logs_tail()}")
        self.timings["up_returned_s"] = time.monotonic() - started
        deadline = started + timeout_s
        while True:
            states = self.health()
            if states and all(state in {"healthy", "completed"} for state in states.values()):
                break
            bad = {name: s for name, s in states.items() if s in {"exited", "dead", "restarting", "unhealthy"}}
            if bad or time.monotonic() > deadline:
                raise RuntimeError(f"not healthy: {bad or states}\n{self.logs_tail()}")
            time.sleep(0.5)
        self.timings["up_to_healthy_s"] = time.monotonic() - started

    def containers(self) -> dict[str, str]:
        """Service name -> container id, for this project's containers, running or not."""
        ids = subprocess.run(
            ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        if not ids:
            return {}
        out = subprocess.run(
            ["docker", "inspect", "-f", '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}}', *ids],
            capture_output=True, text=True, check=True,
        ).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def replicas(self, service: str) -> list[str]:
        """Container ids of every replica of `service` (`--scale`), running or not."""
        return subprocess.run(
            ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
             "--filter", f"label=com.docker.compose.service={service}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()

    def inspect(self, service: str) -> dict:
        """`docker inspect` of a service's container."""
        out = subprocess.run(["docker", "inspect", self.containers()[service]],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)[0]

    def health(self) -> dict[str, str]:
        """Service name -> health status ("starting", "healthy", "unhealthy"), "completed" for a
        container that exited with status 0 (a one-shot job), or the container's state."""
        return {service: self.container_health(container) for service, container in self.containers().items()}

    @staticmethod
    def container_health(container: str) -> str:
        """One container's health status, "completed" (exited 0), or its state when it is not running."""
        out = subprocess.run(
            ["docker", "inspect", "-f",
             "{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
             container], capture_output=True, text=True, check=True,
        ).stdout.split()
        if out[0] == "running":
            return out[2] if len(out) > 2 else "running"
        return "completed" if out[:2] == ["exited", "0"] else out[0]

    def copy_out(self, service: str, path: str, dest: Path) -> Path:
        """Copy a file out of a service's container (`docker cp`)."""
        subprocess.run(["docker", "cp", f"{self.containers()[service]}:{path}", str(dest)],
                       check=True, capture_output=True)
        return dest

    def trust_front_door(self, dest_dir: Path) -> Path:
        """A CA bundle (system roots + Caddy's internal root) for `SSL_CERT_FILE`.

        Both clients in the test honour it: urllib (OpenSSL's default verify paths) and the
        LiveKit SDK's WebSocket (rustls with native roots, which reads SSL_CERT_FILE).
        """
        root = self.copy_out("web", CADDY_ROOT_CA, dest_dir / "caddy-root.crt")
        bundle = dest_dir / "ca-bundle.pem"
        system = Path(ssl.get_default_verify_paths().openssl_cafile or "/etc/ssl/certs/ca-certificates.crt")
        bundle.write_text((system.read_text() if system.exists() else "") + root.read_text())
        return bundle

    def logs_tail(self, lines: int = 30) -> str:
        """The last lines of every service's output."""
        return self.run("logs", "--no-color", f"--tail={lines}", check=False, timeout=60).stdout

    def down(self) -> None:
        """Save every service's output, then `down -v`: containers, network and volumes."""
        logs = self.run("logs", "--no-color", "--timestamps", check=False, timeout=120)
        (self.log_dir / "compose.log").write_text(logs.stdout + logs.stderr)
        started = time.monotonic()
        self.run("down", "-v", "--remove-orphans", "--timeout", "60", check=False, timeout=300)
        self.timings["down_s"] = time.monotonic() - started

    def write_timings(self) -> None:
        """Merge this run's timings into `timings.json` (read by scripts/test-compose)."""
        path = self.log_dir / "timings.json"
        previous = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**previous, **{k: round(v, 1) for k, v in self.timings.items()}}, indent=2))
