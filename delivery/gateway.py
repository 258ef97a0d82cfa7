"""The push gateway client: one FCM HTTP v1 `messages:send` per message, its answer classified.

Works against the local gateway (infra/gateway.py) and, by configuration, a real FCM endpoint:
HERMES_GATEWAY_URL=https://fcm.googleapis.com, `gateway.project` = the Firebase project id, and
HERMES_GATEWAY_TOKEN = an OAuth2 access token of a service account with the Firebase Messaging scope
(short-lived: refresh it per run, e.g. `gcloud auth print-access-token`). FCM ignores the Idempotency-Key
header, so against FCM exactly-once rests on the delivery ledger alone (a crash between FCM's accept and
the ledger's commit can repeat that one in-flight message); the local gateway honours the key.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

OK, RETRY, DEAD_TOKEN, REJECTED, AUTH = "ok", "retry", "dead_token", "rejected", "auth"


@dataclass(frozen=True)
class Outcome:
    kind: str                      # ok | retry | dead_token | rejected | auth
    status: int                    # HTTP status, 0 for timeouts / connection errors
    name: str | None = None        # the gateway's message name when accepted
    retry_after: float | None = None
    error: str | None = None       # errorCode / status text, never the token


def fcm_body(m: dict) -> bytes:
    """FCM v1 message for one batch row. The device token goes only into the body, never into logs."""
    return json.dumps({"message": {
        "token": m["device_token"],
        "notification": {"title": m["title"], "body": m["body"]},
        "data": {"idempotency_key": m["idempotency_key"], "scene_id": m["scene_id"], "user_id": str(m["user_id"]),
                 "item_ids": ",".join(str(i) for i in m["item_ids"]), "platform": m["platform"] or ""},
    }}).encode()


def classify(status: int, body: dict | None, retry_after: str | None) -> Outcome:
    err = (body or {}).get("error") or {}
    code = next((d.get("errorCode") for d in err.get("details", []) if "errorCode" in d), None) or err.get("status")
    ra = None
    if retry_after:
        try:
            ra = float(retry_after)
        except ValueError:
            ra = None
    if status == 200:
        return Outcome(OK, status, name=(body or {}).get("name"))
    if status == 404 or code == "UNREGISTERED":
        return Outcome(DEAD_TOKEN, status, error=code or "NOT_FOUND")
    if status in (401, 403):
        return Outcome(AUTH, status, error=code)
    if status == 429 or status >= 500:
        return Outcome(RETRY, status, retry_after=ra, error=code)
    return Outcome(REJECTED, status, error=code or f"HTTP {status}")


class GatewayClient:
    def __init__(self, base_url: str, project: str, token: str, concurrency: int, timeout_s: float):
        import aiohttp

        if not token:
            raise ValueError("HERMES_GATEWAY_TOKEN is not set (infra/env.sh generates a local one)")
        self.url = f"{base_url.rstrip('/')}/v1/projects/{project}/messages:send"
        self._auth = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=300), timeout=self._timeout)

    async def send(self, m: dict) -> Outcome:
        import aiohttp

        headers = {"Authorization": self._auth, "Idempotency-Key": m["idempotency_key"],
                   "Content-Type": "application/json"}
        try:
            async with self._session.post(self.url, data=fcm_body(m), headers=headers) as r:
                try:
                    body = await r.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = None
                return classify(r.status, body, r.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            return Outcome(RETRY, 0, error="timeout")
        except aiohttp.ClientError as e:
            return Outcome(RETRY, 0, error=type(e).__name__)

    async def close(self) -> None:
        await self._session.close()
