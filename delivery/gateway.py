"""The push gateway client: one FCM HTTP v1 `messages:send` per message, its answer classified.

Works against the local gateway (infra/gateway.py) and, by configuration, a real FCM endpoint:
HERMES_GATEWAY_URL=https://fcm.googleapis.com, `gateway.project` = the Firebase project id, and
HERMES_GATEWAY_TOKEN = an OAuth2 access token of a service account with the Firebase Messaging scope
(short-lived: refresh it per run, e.g. `gcloud auth print-access-token`). FCM ignores the Idempotency-Key
header, so against FCM exactly-once rests on the delivery ledger alone (a crash between FCM's accept and
the ledger's commit can repeat that one in-flight message); the local gateway honours the key.

Two transports behind one `send(m) -> Outcome`: for plain-HTTP gateways (the local one, a sidecar, a
gateway behind a TLS-terminating proxy) a lean HTTP/1.1 keep-alive client — one connection per sender, no
per-request allocations beyond the bytes — which is what makes >= 5,000 msg/s possible on two cores shared
with the gateway; for https (FCM) aiohttp, with TLS and the full protocol.
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


def _parse_head(head: bytes) -> tuple[int, int, str | None]:
    """Status, content length and Retry-After from a response head (status line + headers)."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, retry_after = 0, None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        n = name.strip().lower()
        if n == b"content-length":
            length = int(value)
        elif n == b"retry-after":
            retry_after = value.strip().decode()
        elif n == b"transfer-encoding" and b"chunked" in value.lower():
            raise ValueError("chunked responses are not supported by the lean client")
    return status, length, retry_after


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer


class LeanHttpClient:
    """HTTP/1.1 keep-alive POSTs over plain TCP; a connection per concurrent caller, re-opened after errors."""

    def __init__(self, base_url: str, project: str, token: str, concurrency: int, timeout_s: float):
        from urllib.parse import urlsplit

        if not token:
            raise ValueError("HERMES_GATEWAY_TOKEN is not set (infra/env.sh generates a local one)")
        u = urlsplit(base_url)
        self.host, self.port = u.hostname, u.port or 80
        path = f"{u.path.rstrip('/')}/v1/projects/{project}/messages:send"
        self._prefix = (f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {token}\r\n"
                        "Content-Type: application/json\r\nConnection: keep-alive\r\n").encode()
        self.timeout_s = timeout_s
        self._idle: list[_Conn] = []

    async def _exchange(self, conn: _Conn, request: bytes) -> tuple[int, bytes, str | None]:
        conn.writer.write(request)
        head = await conn.reader.readuntil(b"\r\n\r\n")
        status, length, retry_after = _parse_head(head[:-4])
        body = await conn.reader.readexactly(length) if length else b""
        return status, body, retry_after

    async def send(self, m: dict) -> Outcome:
        body = fcm_body(m)
        request = b"".join((self._prefix, b"Idempotency-Key: ", m["idempotency_key"].encode(),
                            b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n\r\n", body))
        conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = _Conn(*await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout_s))
            status, raw, retry_after = await asyncio.wait_for(self._exchange(conn, request), self.timeout_s)
        except asyncio.TimeoutError:
            if conn is not None:
                conn.writer.close()
            return Outcome(RETRY, 0, error="timeout")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            if conn is not None:
                conn.writer.close()
            return Outcome(RETRY, 0, error=type(e).__name__)
        self._idle.append(conn)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return classify(status, parsed, retry_after)

    async def close(self) -> None:
        for c in self._idle:
            c.writer.close()
        self._idle.clear()


def gateway_client(base_url: str, project: str, token: str, concurrency: int, timeout_s: float):
    """The lean client for http://, aiohttp for https:// (TLS, e.g. FCM)."""
    cls = LeanHttpClient if base_url.startswith("http://") else GatewayClient
    return cls(base_url, project, token, concurrency, timeout_s)


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
