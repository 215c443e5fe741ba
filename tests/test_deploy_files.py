"""The deploy files are real: embedded configs validate, manifests parse, the unit is sane."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

from aigateway.config.load import parse_config
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def test_k8s_manifests_parse_and_are_listed() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        docs = list(yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()))
        assert docs and all({"apiVersion", "kind", "metadata"} <= set(d) for d in docs), name


def test_k8s_embedded_config_validates(tmp_path: Path) -> None:
    configmap = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())
    text = configmap["data"]["gateway.yaml"]
    secret = yaml.safe_load((DEPLOY / "k8s" / "secret.yaml").read_text())
    for name, value in secret["stringData"].items():
        (tmp_path / name).write_text(value)
    text = text.replace("/var/run/secrets/aigateway", str(tmp_path))
    loaded = parse_config(text.encode(), env={}, base_dir=tmp_path)
    assert "fast" in loaded.config.models


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
