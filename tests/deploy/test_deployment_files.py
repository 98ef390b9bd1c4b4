"""The deployment files in deploy/ (#18 point 3), checked with the tools that install from PyPI: no
container runtime or cluster exists here, so the Dockerfile is linted (hadolint), the compose file
validated against the compose schema (check-jsonschema), the gateway config they mount checked by
`modelyard config check`, and the Kubernetes manifests read field by field."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import BIN

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_the_dockerfile_passes_hadolint_and_runs_as_a_user_with_a_healthcheck() -> None:
    lint = run(str(BIN / "hadolint"), str(DEPLOY / "Dockerfile"))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2 and "AS build" in text  # multi-stage
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/ready" in text


def test_the_compose_file_matches_the_compose_schema() -> None:
    check = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml"))
    assert check.returncode == 0, check.stdout + check.stderr
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert {"gateway-1", "gateway-2", "nginx", "postgres", "redis"} <= set(doc["services"])
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "server gateway-1:4000" in nginx and "server gateway-2:4000" in nginx
    assert "proxy_buffering off" in nginx  # streams pass through as they come


def test_the_mounted_config_is_valid() -> None:
    check = run(str(BIN / "modelyard"), "config", "check", str(DEPLOY / "modelyard.yaml"), "--allow-missing-env")
    assert check.returncode == 0, check.stdout + check.stderr
    # mounted read-only at /etc/modelyard: the spill file goes to the image's working directory
    config = yaml.safe_load((DEPLOY / "modelyard.yaml").read_text())
    assert config["usage"]["spill_path"].startswith("/var/lib/modelyard/")


def manifests() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out[doc["kind"]] = doc
    return out


def test_the_kubernetes_manifests_field_by_field() -> None:
    docs = manifests()
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= set(docs)
    dep = docs["Deployment"]
    labels = dep["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["template"]["metadata"]["labels"] == labels
    assert docs["Service"]["spec"]["selector"] == labels
    pdb = docs["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["selector"]["matchLabels"] == labels
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable")
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (gateway,) = pod["containers"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health"
    assert gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert pod["terminationGracePeriodSeconds"] > 10  # longer than the preStop pause
    assert gateway["securityContext"]["allowPrivilegeEscalation"] is False
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in gateway["env"] if "valueFrom" in e}
    assert "MODELYARD_MASTER_KEY" in secrets  # never a literal in the manifest
    assert not [e for e in gateway["env"] if "value" in e and "KEY" in e["name"]]
    mounts = {m["mountPath"] for m in gateway["volumeMounts"]}
    assert {"/etc/modelyard", "/var/lib/modelyard", "/tmp"} <= mounts  # a read-only root still spills usage
    config = yaml.safe_load(docs["ConfigMap"]["data"]["modelyard.yaml"])
    assert config["state"].startswith("redis://") and config["database"].startswith("postgresql://")
    # relative paths are relative to the config file, on the read-only config volume: the spill
    # file must be on the data volume (modelyard serve refuses to start otherwise)
    assert config["usage"]["spill_path"].startswith("/var/lib/modelyard/")
