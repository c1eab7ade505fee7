"""Finding the daemon, and starting one in the background when none answers locally."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from ollamalike import config
from ollamalike.client import Client, ConnectError
from ollamalike.errors import OllamaError
from ollamalike.runner.process import self_command


def _start_daemon() -> None:
    log_dir = config.user_data_dir() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "server.log"
    cmd = self_command() + ["serve"]  # never with the working directory on sys.path
    print(f"ollamalike: no server answered at {config.host().connect_url}; starting one in the background "
          f"(log: {log_path})", file=sys.stderr)
    with open(log_path, "ab") as log:
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


async def _connect() -> Client:
    client = Client()
    await client.__aenter__()
    try:
        await client.heartbeat()
        return client
    except ConnectError:
        host = config.host()
        if not config.autostart() or host.host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
            await client.__aexit__(None, None, None)
            raise
    _start_daemon()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        try:
            await client.heartbeat()
            return client
        except ConnectError:
            continue
    await client.__aexit__(None, None, None)
    raise OllamaError("timed out waiting for server to start")


def run_with_client(coro_fn, *args):
    """Run `coro_fn(client, *args)` against a live daemon."""
    async def main():
        client = await _connect()
        try:
            return await coro_fn(client, *args)
        finally:
            await client.__aexit__(None, None, None)
    return asyncio.run(main())
