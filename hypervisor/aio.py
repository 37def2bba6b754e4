"""What the hypervisor's and the proxy's asyncio processes share: tasks whose failures are seen,
a JSON-lines control socket, and a run loop that stops on SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List

from sdnmig.errors import SdnmigError

MAX_REQUEST = 64 * 1024


class Tasks:
    """Background tasks of one process; a task that raises is a bug: logged with its
    traceback and counted in `errors` (the status answers show it), never swallowed."""

    def __init__(self, log: logging.Logger, name: str) -> None:
        self.log, self.name = log, name
        self.tasks: set = set()
        self.errors: List[str] = []

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001  a bug must be seen, never swallowed
            self.log.exception("%s: task failed", self.name)
            self.errors.append("task failed")

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()


Handler = Callable[[Dict[str, Any]], Awaitable[Any]]


async def serve_control(path: Path, handle: Handler) -> Any:
    """A Unix socket (0600) answering one JSON object per request line; a ValueError,
    TypeError or SdnmigError from `handle` becomes {"error": ...}."""
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    answer = await handle(request)
                except (ValueError, TypeError, SdnmigError) as exc:
                    answer = {"error": str(exc)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    if path.exists():
        path.unlink()
    server = await asyncio.start_unix_server(client, str(path), limit=MAX_REQUEST)
    os.chmod(path, 0o600)
    return server


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
