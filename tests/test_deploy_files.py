"""The deploy files are real: embedded configs validate, manifests parse, the unit is sane."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

import pytest
import yaml

from aigateway.config.load import parse_config
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def test_k8s_manifests_parse_and_are_listed() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {
        p.name for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml"
    }
    for name in kustomization["resources"]:
        docs = list(yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()))
        assert docs and all({"apiVersion", "kind", "metadata"} <= set(d) for d in docs), name


@pytest.mark.parametrize(
    ("configmap_file", "secret_file", "route"),
    [
        ("configmap.yaml", "secret.yaml", "fast"),
        ("sidecar/deployment.yaml", "sidecar/deployment.yaml", "default"),
        ("replicas/configmap.yaml", "secret.yaml", "fast"),
    ],
)
def test_k8s_embedded_configs_validate(
    tmp_path: Path, configmap_file: str, secret_file: str, route: str
) -> None:
    def find(file: str, kind: str) -> dict:
        docs = yaml.safe_load_all((DEPLOY / "k8s" / file).read_text())
        return next(d for d in docs if d["kind"] == kind)

    text = find(configmap_file, "ConfigMap")["data"]["gateway.yaml"]
    for name, value in find(secret_file, "Secret")["stringData"].items():
        (tmp_path / name).write_text(value)
    text = text.replace("/var/run/secrets/aigateway", str(tmp_path))
    env = {"REDIS_URL": "redis://aigateway-redis:6379/0"}  # set by replicas/deployment-patch
    loaded = parse_config(text.encode(), env=env, base_dir=tmp_path)
    assert route in loaded.config.models


def test_sidecar_app_key_matches_the_gateway_config() -> None:
    from aigateway.keys import digest

    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "sidecar" / "deployment.yaml").read_text()))
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    config = yaml.safe_load(
        next(d for d in docs if d["kind"] == "ConfigMap")["data"]["gateway.yaml"]
    )
    assert digest(secret["gateway-key"]) in {k["sha256"] for k in config["keys"]}


def test_k8s_deployment_mounts_what_the_config_references() -> None:
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/aigateway", "/var/run/secrets/aigateway", "/var/lib/aigateway"} <= mounts
    assert not any("subPath" in m for m in container["volumeMounts"])  # ConfigMap updates
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("unit", ["aigateway.service"])
def test_systemd_unit(unit: str) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / unit).read_text())
    service = parser["Service"]
    assert service["ExecStartPre"].endswith("aigateway check /etc/aigateway/gateway.yaml")
    assert "serve --config /etc/aigateway/gateway.yaml" in service["ExecStart"]
    assert service["DynamicUser"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "aigateway"


def test_replicas_overlay_wires_redis_into_the_gateway() -> None:
    overlay = DEPLOY / "k8s" / "replicas"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert ".." in kustomization["resources"] and "redis.yaml" in kustomization["resources"]
    for patch in kustomization["patches"]:
        assert (overlay / patch["path"]).exists()
    patch = yaml.safe_load((overlay / "deployment-patch.yaml").read_text())
    assert patch["spec"]["replicas"] > 1
    env = {e["name"]: e["value"] for e in patch["spec"]["template"]["spec"]["containers"][0]["env"]}
    redis = list(yaml.safe_load_all((overlay / "redis.yaml").read_text()))
    service = next(d for d in redis if d["kind"] == "Service")
    assert env["REDIS_URL"] == f"redis://{service['metadata']['name']}:6379/0"
    config = yaml.safe_load(
        yaml.safe_load((overlay / "configmap.yaml").read_text())["data"]["gateway.yaml"]
    )
    assert config["state"]["backend"] == "redis"


def _exposed_names() -> set[str]:
    """Every sample name the gateway's registry can expose."""
    from aigateway.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def _used_names(text: str) -> set[str]:
    return set(re.findall(r"\baigateway_[a-z_]+\b", text))


def test_dashboard_uses_only_metrics_the_gateway_exposes() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "aigateway.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*(_used_names(e) for e in exprs))
    assert len(used) >= 15
    assert used <= _exposed_names(), used - _exposed_names()


def test_alert_rules_use_only_metrics_the_gateway_exposes() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set().union(*(_used_names(e) for e in exprs))
    assert used <= _exposed_names(), used - _exposed_names()
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"AIGatewayPromptLogErrors", "AIGatewayCircuitOpen"} <= names
