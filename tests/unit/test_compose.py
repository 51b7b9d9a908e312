"""docker-compose.yml is valid and publishes nothing beyond the host's loopback."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICES = {"kafka", "mailpit", "worker"}
LOOPBACK = "127.0.0.1"


def compose_unavailable() -> str | None:
    """Why ``docker compose`` cannot run here, or None; it needs no engine to check a file."""
    docker = shutil.which("docker")
    if docker is None:
        return "docker client not installed"
    try:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker compose version failed: {exc}"
    if probe.returncode != 0:
        return "docker compose plugin not installed"
    return None


def host_ip(port: Any) -> str | None:
    """Host address a ``ports:`` entry binds, in short ("ip:host:container") or long syntax."""
    if isinstance(port, dict):
        ip = port.get("host_ip")
        return str(ip) if ip is not None else None
    parts = str(port).split("#")[0].strip().strip("\"'").rsplit(":", 2)
    return parts[0] if len(parts) == 3 else None


def test_docker_compose_accepts_the_file() -> None:
    reason = compose_unavailable()
    if reason is not None:
        pytest.skip(reason)
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_defines_the_stack_and_binds_loopback_only() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed")
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    services: dict[str, Any] = compose["services"]

    assert set(services) >= SERVICES
    for name, service in services.items():
        for port in service.get("ports", []):
            assert host_ip(port) == LOOPBACK, f"{name} publishes {port!r} beyond {LOOPBACK}"

    worker = services["worker"]
    assert worker["environment"]["PREAVISO_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert worker["environment"]["PREAVISO_SMTP_HOST"] == "mailpit"
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_every_published_port_binds_loopback_even_without_yaml() -> None:
    """A plain-text scan, so the most important rule is checked on every machine."""
    lines = COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
    published: list[str] = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)ports:\s*$", line)
        if match is None:
            continue
        indent = len(match.group(1))
        for item in lines[index + 1 :]:
            if item.strip() and len(item) - len(item.lstrip()) <= indent:
                break
            entry = re.match(r"^\s*-\s*(.+)$", item)
            if entry is not None:
                published.append(entry.group(1))

    assert published, "expected docker-compose.yml to publish some ports"
    for port in published:
        assert host_ip(port) == LOOPBACK, f"port {port!r} must bind {LOOPBACK}"
    for service in SERVICES:
        assert re.search(rf"^  {service}:\s*$", "\n".join(lines), re.MULTILINE), service
