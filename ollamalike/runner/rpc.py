"""llama.cpp RPC workers as the daemon sees them, in pure Python (no llama_cpp import): parse the
`host:port` list, and ask a worker over its own wire protocol how many devices it has and how much
memory each has free. The protocol (ggml-rpc.cpp, v7): a request is `cmd u8 | size u64 | data`, a
reply `size u64 | data`; a connection starts with HELLO. A worker serves one client at a time, so a
worker busy with a runner does not answer a second connection: the probe times out."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

PROTO_MAJOR = 7
CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15
CONN_CAPS = 24  # bytes of transport capabilities in HELLO (all zero: plain TCP)
DEFAULT_PORT = 50052


class RpcDown(OSError):
    """A worker that cannot be used: not listening, not answering, or another protocol."""

    def __init__(self, endpoint: str, reason: str):
        super().__init__(f"rpc worker {endpoint} {reason}")
        self.endpoint = endpoint
        self.reason = reason


@dataclass(frozen=True)
class RemoteDevice:
    """One device of one worker: `endpoint` host:port, `device` its number there."""

    endpoint: str
    device: int
    free: int
    total: int

    @property
    def name(self) -> str:
        return self.endpoint if self.device == 0 else f"{self.endpoint}#{self.device}"


def parse_endpoint(text: str) -> str:
    """`host:port` (port defaults to 50052; IPv6 in brackets). ValueError names a bad entry."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or (host.startswith("[") is not host.endswith("]")) or "]" in port:
        host, port = text, str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or " " in host:
        raise ValueError(f"invalid rpc worker address '{text}', expected host:port")
    return f"{host}:{int(port)}"


def parse_servers(text: str) -> tuple[str, ...]:
    """The comma-separated OLLAMALIKE_RPC_SERVERS list, normalised, duplicates dropped."""
    out: list[str] = []
    for part in text.split(","):
        if part.strip():
            ep = parse_endpoint(part)
            if ep not in out:
                out.append(ep)
    return tuple(out)


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed the connection")
        buf += chunk
    return buf


def _call(sock: socket.socket, cmd: int, data: bytes, reply: int) -> bytes:
    sock.sendall(struct.pack("<BQ", cmd, len(data)) + data)
    size = struct.unpack("<Q", _recv(sock, 8))[0]
    if size != reply:
        raise ConnectionError(f"answered {size} bytes where {reply} were expected")
    return _recv(sock, reply)


def probe(endpoint: str, timeout: float = 3.0) -> list[RemoteDevice]:
    """The worker's devices with their free and total memory; RpcDown says why not."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            hello = _call(sock, CMD_HELLO, bytes(CONN_CAPS), 4 + CONN_CAPS)
            if hello[0] != PROTO_MAJOR:
                raise RpcDown(endpoint, f"speaks RPC protocol {hello[0]}.{hello[1]}, this build speaks "
                                        f"{PROTO_MAJOR}.x (run the same ollamalike version on both)")
            count = struct.unpack("<I", _call(sock, CMD_DEVICE_COUNT, b"", 4))[0]
            devices = []
            for i in range(count):
                free, total = struct.unpack("<QQ", _call(sock, CMD_GET_DEVICE_MEMORY, struct.pack("<I", i), 16))
                devices.append(RemoteDevice(endpoint, i, free, total))
            return devices
    except RpcDown:
        raise
    except socket.timeout:
        raise RpcDown(endpoint, "is not answering (busy with another client, or not an rpc worker)") from None
    except ConnectionRefusedError:
        raise RpcDown(endpoint, "is down (connection refused)") from None
    except (OSError, ValueError, struct.error) as exc:
        raise RpcDown(endpoint, f"is unreachable ({str(exc) or type(exc).__name__})") from None
