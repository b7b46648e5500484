"""Renders the Helm chart (`deploy/helm/voice-appliance`) offline with `helm template`.

Shared by the chart's rule tests (tests/helm) and the multi-node test (tests/scaleout), which
runs livekit-server with the LiveKit configuration the chart renders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

import yaml

from scripts.stack import ROOT

CHART = ROOT / "deploy" / "helm" / "voice-appliance"
#: The Kubernetes release the chart is checked against (scripts/lib/bootstrap.sh's KUBERNETES_VERSION).
KUBERNETES_VERSION = os.environ.get("KUBERNETES_VERSION", "v1.34.4").removeprefix("v")
#: Values every render needs: the chart refuses to render without the Secret's name.
REQUIRED_VALUES = {"existingSecret": "voice-appliance-secrets"}


class ChartError(RuntimeError):
    """`helm` refused the chart or its values; the message is helm's."""


def helm() -> str:
    """The helm binary (installed by ./scripts/test's setup).

    Raises:
        ChartError: when helm is not on PATH.
    """
    path = shutil.which("helm")
    if path is None:
        raise ChartError("helm is not on PATH: run the tests with ./scripts/test")
    return path


def _set_args(values: Mapping[str, Any]) -> list[str]:
    args = []
    for key, value in {**REQUIRED_VALUES, **values}.items():
        if isinstance(value, (list, dict)):
            args += ["--set-json", f"{key}={json.dumps(value)}"]
        else:
            args += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    return args


def template(values: Mapping[str, Any] | None = None, release: str = "va") -> str:
    """`helm template` with `values` (dotted keys, as `--set`), as the YAML text.

    Raises:
        ChartError: helm failed (a `required`/`fail` in the chart, a bad value).
    """
    result = subprocess.run(
        [helm(), "template", release, str(CHART), "--kube-version", KUBERNETES_VERSION, *_set_args(values or {})],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise ChartError(result.stderr.strip())
    return result.stdout


def render(values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The rendered manifests, parsed (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(template(values)) if doc]


def find(manifests: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    """The one manifest of `kind` for `component` (label app.kubernetes.io/component)."""
    found = [m for m in manifests if m["kind"] == kind
             and m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]
    if len(found) != 1:
        raise LookupError(f"{len(found)} {kind} manifests for {component}")
    return found[0]


def livekit_config(values: Mapping[str, Any] | None = None) -> str:
    """livekit-server's config.yaml as the chart renders it (its ConfigMap), verbatim."""
    return find(render(values), "ConfigMap", "livekit")["data"]["config.yaml"]

