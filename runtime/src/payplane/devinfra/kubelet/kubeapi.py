"""The few Kubernetes REST calls the kubelet makes, as JSON dictionaries (kubeconfig credentials)."""

import json
from typing import Any, Final
from urllib.parse import urlencode

import urllib3
from kubernetes import config

REQUEST_TIMEOUT_S: Final = 10.0
MERGE_PATCH: Final = "application/merge-patch+json"


class KubeApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


class KubeApi:
    """A synchronous client for one API server: ``get``, ``create``, ``patch``, ``delete``."""

    def __init__(self, kubeconfig: str, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self._host = api_client.configuration.host.rstrip("/")
        self._pool: urllib3.PoolManager = api_client.rest_client.pool_manager
        token = api_client.configuration.get_api_key_with_prefix("BearerToken")
        self._auth = {"Authorization": token} if token else {}
        self._timeout = urllib3.Timeout(total=timeout_s)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        url = self._host + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", **self._auth}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        try:
            response = self._pool.request(method, url, body=data, headers=headers, timeout=self._timeout, retries=False)
        except urllib3.exceptions.HTTPError as exc:
            raise KubeApiError(method, path, 0, str(exc)) from None
        text = response.data.decode(errors="replace")
        if response.status >= 300:
            raise KubeApiError(method, path, response.status, text)
        parsed: dict[str, Any] = json.loads(text) if text else {}
        return parsed

    def get(self, path: str, **query: str) -> dict[str, Any]:
        return self.request("GET", path, query=query or None)

    def items(self, path: str, **query: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get(path, **query).get("items") or []
        return found

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body, content_type=MERGE_PATCH)

    def delete(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("DELETE", path, body)
