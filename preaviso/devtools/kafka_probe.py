"""Is the local broker serving? One Kafka Metadata request over a plain socket.

``LocalKafka`` waits for its broker synchronously (no event loop), so the probe is one
blocking round trip that either lists the brokers' ports or raises.
"""

from __future__ import annotations

import socket
import struct


def encode_metadata_request(correlation_id: int) -> bytes:
    """Metadata v4 for no topics: the cheapest request that proves the broker serves."""
    body = (
        struct.pack(">hhih", 3, 4, correlation_id, 8) + b"preaviso" + struct.pack(">i?", 0, False)
    )
    return struct.pack(">i", len(body)) + body


def decode_metadata_ports(payload: bytes, correlation_id: int) -> list[int]:
    """Ports of the brokers listed in a Metadata v4 response (length prefix stripped)."""
    corr, _throttle, count = struct.unpack_from(">iii", payload)
    if corr != correlation_id:
        raise ValueError("metadata response for another request")
    pos, ports = 12, []
    for _ in range(count):  # node_id int32, host string, port int32, rack nullable string
        (host_len,) = struct.unpack_from(">h", payload, pos + 4)
        port, rack_len = struct.unpack_from(">ih", payload, pos + 6 + host_len)
        ports.append(port)
        pos += 6 + host_len + 6 + max(rack_len, 0)
    return ports


def probe_metadata(host: str, port: int, timeout: float = 2.0) -> list[int]:
    """One Metadata round trip; raises OSError/ValueError while the broker is not ready."""
    with socket.create_connection((host, port), timeout=timeout) as sock, sock.makefile("rb") as f:
        sock.sendall(encode_metadata_request(7))
        (size,) = struct.unpack(">i", f.read(4))
        payload = f.read(size)
        if len(payload) != size:
            raise ConnectionError("broker closed the connection")
        return decode_metadata_ports(payload, 7)
