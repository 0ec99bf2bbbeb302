"""A small asyncio Kubernetes client: server-side apply, get, delete, events, over one aiohttp session.

Credentials come from a kubeconfig (``KUBECONFIG``) or the pod's service account, loaded by the official
``kubernetes`` package; requests go through aiohttp so nothing blocks the event loop. Only the kinds the
operator manages are known (``RESOURCES``); every call is bounded by the configured timeout.
"""

import asyncio
import datetime
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from payplane_operator.clients.errors import KubeApiError
from payplane_operator.resources import Manifest, ObjectRef
from payplane_operator.settings import KubeConfig

APPLY_CONTENT_TYPE: Final = "application/apply-patch+yaml"  # JSON is YAML
MERGE_CONTENT_TYPE: Final = "application/merge-patch+json"


@dataclass(frozen=True)
class Resource:
    plural: str
    namespaced: bool = True


RESOURCES: Final[Mapping[tuple[str, str], Resource]] = {
    ("v1", "ServiceAccount"): Resource("serviceaccounts"),
    ("v1", "ConfigMap"): Resource("configmaps"),
    ("v1", "Service"): Resource("services"),
    ("v1", "Secret"): Resource("secrets"),
    ("v1", "Pod"): Resource("pods"),
    ("v1", "Event"): Resource("events"),
    ("v1", "Namespace"): Resource("namespaces", namespaced=False),
    ("apps/v1", "Deployment"): Resource("deployments"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): Resource("horizontalpodautoscalers"),
    ("policy/v1", "PodDisruptionBudget"): Resource("poddisruptionbudgets"),
    ("payplane.io/v1alpha1", "PaymentRail"): Resource("paymentrails"),
    ("payplane.io/v1alpha1", "LedgerShard"): Resource("ledgershards"),
    ("payplane.io/v1alpha1", "FraudPolicy"): Resource("fraudpolicies"),
}


def resource_path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    try:
        resource = RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator's client does not know {api_version} {kind}") from None
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{resource.plural}" if resource.namespaced else f"{base}/{resource.plural}"
    return f"{path}/{name}" if name else path


def _load_credentials(config: KubeConfig) -> Any:
    """The official client's view of the kubeconfig (or the pod's service account); the path is passed
    explicitly, since the package reads ``KUBECONFIG`` only once, at import."""
    configuration = k8s_client.Configuration()
    loader: Any = k8s_config  # untyped package
    if config.kubeconfig is not None:
        loader.load_kube_config(config_file=str(config.kubeconfig), client_configuration=configuration)
    else:
        loader.load_incluster_config(client_configuration=configuration)
    return configuration


def _bearer(configuration: Any) -> str | None:
    """The Authorization header value, if the credentials are a token (kubernetes >= 36 keeps it under
    ``BearerToken``, older versions under ``authorization``)."""
    hook = getattr(configuration, "refresh_api_key_hook", None)
    if hook is not None:
        hook(configuration)  # in-cluster: re-reads the projected token when it rotates
    header: str | None = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    return header or None


@dataclass(frozen=True)
class Credentials:
    """How to reach and authenticate to the API server (kopf's login handler uses the same)."""

    server: str
    ca_path: str | None
    verify: bool
    cert_path: str | None
    key_path: str | None
    authorization: str | None  # e.g. "Bearer <token>"


def load_credentials(config: KubeConfig) -> Credentials:
    configuration = _load_credentials(config)
    return Credentials(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        verify=bool(configuration.verify_ssl),
        cert_path=configuration.cert_file,
        key_path=configuration.key_file,
        authorization=_bearer(configuration),
    )


def _ssl_context(configuration: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


class KubeClient:
    """One session to one API server. ``await KubeClient.connect(config)``; ``await client.close()``."""

    def __init__(self, configuration: Any, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self._configuration = configuration
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._host = str(configuration.host).rstrip("/")

    @classmethod
    async def connect(cls, config: KubeConfig) -> "KubeClient":
        configuration = await asyncio.to_thread(_load_credentials, config)
        connector = aiohttp.TCPConnector(ssl=_ssl_context(configuration), limit=32)
        return cls(configuration, aiohttp.ClientSession(connector=connector), config.request_timeout_s)

    async def close(self) -> None:
        await self._session.close()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = _bearer(self._configuration)
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any] | None:
        """The decoded answer, ``None`` for 404; KubeApiError for any other failure."""
        url = f"{self._host}{path}"
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                json=json_body,
                headers=self._headers(content_type),
                timeout=self._timeout,
            ) as response:
                if response.status == 404:
                    return None
                body = await response.json(content_type=None)
                if response.status >= 400:
                    message = body.get("message", "") if isinstance(body, dict) else str(body)
                    reason = body.get("reason", "") if isinstance(body, dict) else ""
                    raise KubeApiError(
                        f"{method} {path}: {response.status} {message}", status=response.status, reason=reason
                    )
                return body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(f"{method} {path}: {type(exc).__name__}: {exc}", status=0) from exc

    async def apply(
        self, manifest: Manifest, *, field_manager: str, force: bool = True, subresource: str = ""
    ) -> dict[str, Any]:
        """Server-side apply ``manifest`` as ``field_manager``; returns the object as stored."""
        ref = ObjectRef.of(manifest)
        path = resource_path(ref.api_version, ref.kind, ref.namespace, ref.name)
        if subresource:
            path = f"{path}/{subresource}"
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        result = await self._request("PATCH", path, params=params, json_body=manifest, content_type=APPLY_CONTENT_TYPE)
        if result is None:
            raise KubeApiError(f"apply {ref}: the namespace or the resource type does not exist", status=404)
        return result

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        return await self._request("GET", resource_path(ref.api_version, ref.kind, ref.namespace, ref.name))

    async def list(self, api_version: str, kind: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self._request("GET", resource_path(api_version, kind, namespace), params=params)
        return list((result or {}).get("items", []))

    async def delete(self, ref: ObjectRef, *, uid: str = "") -> bool:
        """Delete (in the background); with ``uid``, only that incarnation of the object. False if absent."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        path = resource_path(ref.api_version, ref.kind, ref.namespace, ref.name)
        try:
            return await self._request("DELETE", path, json_body=body) is not None
        except KubeApiError as exc:
            if exc.status == 409:  # the uid precondition failed: someone else's object of that name
                return False
            raise

    async def post_event(
        self, involved: Mapping[str, Any], *, event_type: str, reason: str, message: str, component: str
    ) -> None:
        """A core/v1 Event about ``involved`` (an object body), as ``kubectl describe`` shows them."""
        metadata = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{metadata['name']}.{uuid.uuid4().hex[:12]}", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid", ""),
                "resourceVersion": metadata.get("resourceVersion", ""),
            },
            "type": event_type,
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._request("POST", resource_path("v1", "Event", metadata["namespace"]), json_body=event)
