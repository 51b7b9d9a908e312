"""Pure helpers of the local Kafka broker: config, ports, ids, cache and probe codec."""

from __future__ import annotations

import base64
import shutil
import socket
import struct
from pathlib import Path

import pytest

from preaviso.devtools import kafka as lk
from preaviso.devtools import kafka_fetch as kf
from preaviso.devtools import kafka_probe as probe


def parse(text: str) -> dict[str, str]:
    """Like java.util.Properties for our simple files: the last occurrence wins."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    text = lk.render_server_properties(port=19092, controller_port=19093, log_dir=tmp_path)
    props = parse(text)
    assert "$" not in text
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == f"{props['node.id']}@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path)
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"


def test_server_properties_extra_overrides(tmp_path: Path) -> None:
    text = lk.render_server_properties(
        port=1, controller_port=2, log_dir=tmp_path, extra={"num.partitions": "3", "a.b": "c"}
    )
    props = parse(text)
    assert props["num.partitions"] == "3"
    assert props["a.b"] == "c"


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = lk.free_ports(2)
    assert len(set(ports)) == 2
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_cluster_id_looks_like_a_kafka_uuid() -> None:
    ids = {lk.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_cache_dir_default_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(kf.ENV_CACHE, raising=False)
    default = kf.kafka_cache_dir()
    assert default == Path.home() / ".cache" / "preaviso" / f"kafka-{kf.KAFKA_VERSION}"
    monkeypatch.setenv(kf.ENV_CACHE, str(tmp_path))
    assert kf.kafka_cache_dir("9.9.9") == tmp_path / "kafka-9.9.9"


def test_fetch_skips_mvn_when_marker_present(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / ".complete").write_text(kf.KAFKA_VERSION + "\n")
    monkeypatch.setattr(shutil, "which", lambda name: None)  # mvn would be "missing"
    assert kf.fetch_kafka(cache_dir=tmp_path) == libs


def test_fetch_without_marker_needs_mvn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "libs").mkdir()  # an interrupted earlier download: jars but no marker
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(kf.KafkaToolMissing, match="mvn"):
        kf.fetch_kafka(cache_dir=tmp_path)


def test_fetch_reports_mvn_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in {"mvn": "echo '[ERROR] Could not resolve kafka'; exit 1", "java": ""}.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(kf.KafkaFetchError, match="Could not resolve kafka") as info:
        kf.fetch_kafka(cache_dir=tmp_path / "cache")
    assert "Maven Central" in str(info.value)
    assert not (tmp_path / "cache" / "libs" / ".complete").exists()


def test_missing_java_is_a_tool_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(kf.KafkaToolMissing, match="java"):
        kf.find_java()


def test_metadata_request_frame() -> None:
    frame = probe.encode_metadata_request(42)
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    assert struct.unpack_from(">hhi", frame, 4) == (3, 4, 42)  # Metadata, v4, correlation id


def metadata_response(corr: int, brokers: list[tuple[int, str, int, str | None]]) -> bytes:
    out = struct.pack(">iii", corr, 0, len(brokers))
    for node, host, port, rack in brokers:
        out += struct.pack(">ih", node, len(host)) + host.encode() + struct.pack(">i", port)
        rack_bytes = b"" if rack is None else rack.encode()
        out += struct.pack(">h", -1 if rack is None else len(rack_bytes)) + rack_bytes
    return out + struct.pack(">hi", -1, 1) + struct.pack(">i", 0)  # cluster id, controller, topics


def test_metadata_response_ports() -> None:
    payload = metadata_response(7, [(1, "127.0.0.1", 9092, None), (2, "h", 9093, "rack-a")])
    assert probe.decode_metadata_ports(payload, 7) == [9092, 9093]
    assert probe.decode_metadata_ports(metadata_response(7, []), 7) == []
    with pytest.raises(ValueError, match="another request"):
        probe.decode_metadata_ports(payload, 8)


def test_bootstrap_requires_start() -> None:
    with pytest.raises(lk.KafkaStartError, match="not started"):
        _ = lk.LocalKafka().bootstrap


def test_log_report_shows_errors_before_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    lines = [f"[t] INFO line {i} (x)" for i in range(100)]
    lines[10:12] = ["[t] ERROR Unable to start acceptor (y)", "KafkaException: failed to bind"]
    log.write_text("\n".join(lines))
    report = lk._log_report(log)
    assert "Unable to start acceptor" in report
    assert "failed to bind" in report
    assert "line 99" in report
    assert "line 50" not in report
    assert "first errors" in lk._log_report(tmp_path / "missing.log")
