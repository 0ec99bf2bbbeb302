"""Reading what a workload pod reports about itself: ``GET http://<pod IP>:<metrics port>/status`` (the
payment worker's FraudPolicy version, a ledger writer's partitions and lag), as CloudNativePG's operator
asks its instance managers. Each read is bounded by ``timeout_s`` and at most ``parallel_max`` run at
once; a pod that does not answer, or answers something that is not a JSON object, reads as None
(unknown), never as an error.
"""

import asyncio
import ipaddress
import json
import logging
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

log = logging.getLogger(__name__)
STATUS_PATH: Final = "/status"
STATUS_BYTES_MAX: Final = 1024 * 1024


class WorkloadStatusClient:
    def __init__(self, timeout_s: float, parallel_max: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._gate = asyncio.Semaphore(parallel_max)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running loop (kopf's), on first use
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def read(self, address: str, port: int) -> Mapping[str, Any] | None:
        host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        url = f"http://{host}:{port}{STATUS_PATH}"
        async with self._gate:
            try:
                async with self._client().get(url, headers={"Accept": "application/json"}) as response:
                    if response.status != 200:
                        log.debug("%s answered %d", url, response.status)
                        return None
                    raw = await response.content.read(STATUS_BYTES_MAX + 1)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("%s: %s", url, exc)
                return None
        try:
            found = json.loads(raw) if len(raw) <= STATUS_BYTES_MAX else None
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
