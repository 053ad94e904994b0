"""The resource requests and limits of every Tribune container (deploy/kubernetes), sized
from measurements (bench/resource_sizing.py; README, Operations > Resource sizing): each
limit is above its request, so the scheduler's promise fits inside what the kubelet
enforces, and a memory limit leaves room for a burst over the request."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
_UNITS = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("250m", "1", "384Mi") as a number (cores, bytes)."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and match.group(2) in _UNITS, f"unknown quantity {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2)]


def deployments() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        path = K8S_DIR / name
        if path.is_file():
            docs = yaml.safe_load_all(path.read_text())
            found += [d for d in docs if d and d.get("kind") == "Deployment"]
    return found


def test_quantities_are_read_as_kubernetes_does() -> None:
    assert quantity("250m") == 0.25 and quantity("1") == 1 and quantity("1.5") == 1.5
    assert quantity("384Mi") == 384 * 2**20 and quantity("1Gi") == 2**30


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["metadata"]["name"])
def test_every_container_requests_less_than_its_limit(deployment: dict[str, Any]) -> None:
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert quantity(requests["cpu"]) <= quantity(limits["cpu"]), container["name"]
        assert quantity(limits["memory"]) >= 1.5 * quantity(requests["memory"]), (
            f"{container['name']}: a memory limit this close to the request leaves no room "
            "for a burst (an import batch, a campaign fan-out) before the OOM kill"
        )
