"""The local push gateway: a stand-in for FCM HTTP v1 / the company gateway, with faults on demand.

    python infra/gateway.py --port 8480 --db var/gateway/receipts.sqlite [--config faults.json]

Contract (DESIGN.md): `POST /v1/projects/{project}/messages:send`, bearer token, FCM v1 body
{"message": {"token", "notification": {"title", "body"}, "data": {...}}}, idempotency key in the
`Idempotency-Key` header (or data.idempotency_key). Answers: 200 {"name": ...}; 400 INVALID_ARGUMENT;
401 UNAUTHENTICATED / 403 PERMISSION_DENIED; 404 NOT_FOUND + errorCode UNREGISTERED (dead token);
429 QUOTA_EXCEEDED + Retry-After (gateway quota, random throttling, or the device's daily platform quota);
500 INTERNAL / 503 UNAVAILABLE (injected). A repeated idempotency key is acknowledged with the first
delivery's name and is not delivered again — unless the faults config says {"dedup": false}: then, like
FCM, the gateway ignores the key and delivers every request again (each delivery is a `requests` row with
status 200 and no reason), which is how the exactly-once trials count what the ledger alone achieves.

Durability: every delivery is written to SQLite (`receipts`, one row per delivered key) before the 200 is
sent — by group commit: concurrent requests share one transaction, each waits for its commit. Every request
is logged too (`requests`: arrival time, key, status), so tests can count exactly what arrived and when.

Fault injection (JSON config, all optional): {"p500": 0.1, "p503": 0.1, "p429": 0.05, "retry_after_s": 1,
"p_hang": 0.01, "hang_s": 30, "latency_ms": 0, "quota_per_second": 0, "dead_token_share": 0.02,
"dead_tokens": ["..."], "platform_quotas": {"android_xiaomi": 1}, "seed": 1}. A hung request is delivered
and then never answered in time (the worst case for duplicates: the sender must retry, the key dedups).
Dead tokens: listed ones, plus a deterministic share of all tokens by hash.

Only the standard library, httptools (the HTTP parser) and uvloop if present: it runs beside the pipeline,
not inside it, and costs little CPU so that a benchmark on the same machine measures the sender.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

log = logging.getLogger("hermes.gateway")
TOKEN_ENV = "HERMES_GATEWAY_TOKEN"


Reply = tuple  # (status, headers, body bytes)


def _json(status: int, doc: dict, headers: dict | None = None) -> Reply:
    return status, headers or {}, json.dumps(doc).encode()


def _error(code: int, status: str, message: str, error_code: str | None = None, headers=None) -> Reply:
    body = {"error": {"code": code, "message": message, "status": status}}
    if error_code:
        body["error"]["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                     "errorCode": error_code}]
    return _json(code, body, headers)


def _ok(name: str) -> Reply:
    return 200, {}, b'{"name": "' + name.encode() + b'"}'


def token_sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    """Receipts and the request log in SQLite, written by group commit from one writer task."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("""CREATE TABLE IF NOT EXISTS receipts (
            idempotency_key TEXT PRIMARY KEY, name TEXT NOT NULL, token_sha256 TEXT NOT NULL, user_id INTEGER,
            platform TEXT, day TEXT NOT NULL, accepted_at REAL NOT NULL)""")
        self.db.execute("""CREATE TABLE IF NOT EXISTS requests (
            at REAL NOT NULL, idempotency_key TEXT, status INTEGER NOT NULL, reason TEXT)""")
        self.names = dict(self.db.execute("SELECT idempotency_key, name FROM receipts"))
        self.per_device_day: dict[tuple[str, str], int] = defaultdict(int)
        for sha, day, n in self.db.execute("SELECT token_sha256, day, count(*) FROM receipts GROUP BY 1, 2"):
            self.per_device_day[(sha, day)] = n
        self.queue: asyncio.Queue = asyncio.Queue()
        self.inflight: dict[str, asyncio.Future] = {}

    async def writer(self) -> None:
        while True:
            batch = [await self.queue.get()]
            await asyncio.sleep(0.001)      # a group-commit window: the requests of one loop turn share it
            while not self.queue.empty() and len(batch) < 5000:
                batch.append(self.queue.get_nowait())
            receipts = [x[1] for x in batch if x[0] == "receipt"]
            requests = [x[1] for x in batch if x[0] == "request"]
            self.db.execute("BEGIN")
            if receipts:
                self.db.executemany("INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    [r[:7] for r in receipts])
            if requests:
                self.db.executemany("INSERT INTO requests VALUES (?, ?, ?, ?)", requests)
            self.db.execute("COMMIT")
            for r in receipts:
                if not r[7].done():
                    r[7].set_result(True)

    def log_request(self, key: str | None, status: int, reason: str | None = None) -> None:
        self.queue.put_nowait(("request", (time.time(), key, status, reason)))

    def deliver(self, key: str, name: str, sha: str, user_id, platform, day: str) -> asyncio.Future:
        """Queue the receipt; the returned future resolves when its transaction has committed."""
        done = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(("receipt", (key, name, sha, user_id, platform, day, time.time(), done)))
        return done


class Gateway:
    def __init__(self, store: Store, token: str, project: str, faults: dict):
        self.store, self.token, self.project = store, token, project
        self.f = faults
        self.rng = random.Random(faults.get("seed", 1))
        self.dead = {token_sha(t) for t in faults.get("dead_tokens", [])}
        self.quotas = faults.get("platform_quotas", {})
        self.window_start, self.window_count = time.monotonic(), 0
        self.counter = 0
        self.dedup = bool(faults.get("dedup", True))

    def is_dead(self, sha: str) -> bool:
        share = float(self.f.get("dead_token_share", 0))
        return sha in self.dead or (share > 0 and int(sha[:8], 16) / 0xFFFFFFFF < share)

    def over_quota(self) -> bool:
        qps = float(self.f.get("quota_per_second", 0))
        if qps <= 0:
            return False
        now = time.monotonic()
        if now - self.window_start >= 1.0:
            self.window_start, self.window_count = now, 0
        self.window_count += 1
        return self.window_count > qps

    async def send(self, project: str, headers: dict, body: bytes) -> Reply:
        st = self.store
        if project != self.project:
            st.log_request(None, 404, "project")
            return _error(404, "NOT_FOUND", f"project {project!r} not found")
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            st.log_request(None, 401, "no token")
            return _error(401, "UNAUTHENTICATED", "request is missing a bearer token")
        if auth[7:] != self.token:
            st.log_request(None, 403, "bad token")
            return _error(403, "PERMISSION_DENIED", "the bearer token is not valid for this project")
        try:
            msg = json.loads(body)["message"]
            device = msg["token"]
            note = msg["notification"]
            if not device or not note.get("title") or not note.get("body"):
                raise ValueError("token, notification.title and notification.body are required")
        except (ValueError, KeyError, TypeError) as e:
            st.log_request(None, 400, "invalid")
            return _error(400, "INVALID_ARGUMENT", f"invalid message: {e}")
        data = msg.get("data") or {}
        key = headers.get("idempotency-key") or data.get("idempotency_key")
        if not key:
            st.log_request(None, 400, "no key")
            return _error(400, "INVALID_ARGUMENT", "an Idempotency-Key header is required")
        if self.f.get("latency_ms"):
            await asyncio.sleep(self.f["latency_ms"] / 1000)
        if self.over_quota():
            st.log_request(key, 429, "gateway quota")
            return _error(429, "RESOURCE_EXHAUSTED", "gateway quota exceeded", "QUOTA_EXCEEDED",
                          {"Retry-After": str(self.f.get("retry_after_s", 1))})
        if self.dedup and key in st.names:                 # already delivered: acknowledge, do not deliver again
            st.log_request(key, 200, "duplicate")
            return _ok(st.names[key])
        if self.dedup and key in st.inflight:              # the same key is being delivered right now
            await st.inflight[key]
            st.log_request(key, 200, "duplicate")
            return _ok(st.names[key])
        r = self.rng.random()
        p500, p503, p429 = (float(self.f.get(k, 0)) for k in ("p500", "p503", "p429"))
        if r < p500:
            st.log_request(key, 500, "injected")
            return _error(500, "INTERNAL", "injected internal error")
        if r < p500 + p503:
            st.log_request(key, 503, "injected")
            return _error(503, "UNAVAILABLE", "injected unavailability",
                          headers={"Retry-After": str(self.f.get("retry_after_s", 1))})
        if r < p500 + p503 + p429:
            st.log_request(key, 429, "injected")
            return _error(429, "RESOURCE_EXHAUSTED", "injected throttling", "QUOTA_EXCEEDED",
                          {"Retry-After": str(self.f.get("retry_after_s", 1))})
        sha = token_sha(device)
        if self.is_dead(sha):
            st.log_request(key, 404, "unregistered")
            return _error(404, "NOT_FOUND", "requested entity was not found", "UNREGISTERED")
        day = time.strftime("%Y-%m-%d", time.gmtime())
        platform = data.get("platform")
        quota = self.quotas.get(platform)
        if quota is not None and st.per_device_day[(sha, day)] >= int(quota):
            st.log_request(key, 429, "device quota")
            tomorrow = 86400 - int(time.time()) % 86400
            return _error(429, "RESOURCE_EXHAUSTED", f"{platform} allows {quota} pushes per device per day",
                          "QUOTA_EXCEEDED", {"Retry-After": str(tomorrow)})
        self.counter += 1
        name = f"projects/{self.project}/messages/{os.getpid()}-{self.counter}"
        st.per_device_day[(sha, day)] += 1
        committed = st.deliver(key, name, sha, int(data["user_id"]) if data.get("user_id") else None, platform, day)
        st.inflight[key] = committed               # a concurrent duplicate waits for this commit
        try:
            await committed
            st.names.setdefault(key, name)
        finally:
            st.inflight.pop(key, None)
        hang = self.rng.random() < float(self.f.get("p_hang", 0))
        st.log_request(key, 200, "hung" if hang else None)
        if hang:                                             # delivered, but the answer never comes in time
            await asyncio.sleep(float(self.f.get("hang_s", 30)))
        return _ok(name)

    def health(self) -> Reply:
        return _json(200, {"status": "ok", "delivered": len(self.store.names)})


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}
SEND_PREFIX, SEND_SUFFIX = "/v1/projects/", "/messages:send"


class HttpConnection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive over asyncio + httptools (the C parser uvicorn uses): requests of one
    connection are answered in order by one worker, so a hung request holds only its own connection."""

    def __init__(self, gateway: Gateway):
        import httptools

        self.gw = gateway
        self.parser = httptools.HttpRequestParser(self)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.transport = None
        self.worker = None
        self._url = b""
        self._headers: dict = {}
        self._body: list = []

    # asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes):
        import httptools

        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(*_error(400, "INVALID_ARGUMENT", "malformed HTTP request"))
            self.transport.close()

    def connection_lost(self, exc):
        if self.worker:
            self.worker.cancel()

    # httptools callbacks
    def on_message_begin(self):
        self._url, self._headers, self._body = b"", {}, []

    def on_url(self, url: bytes):
        self._url += url

    def on_header(self, name: bytes, value: bytes):
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes):
        self._body.append(body)

    def on_message_complete(self):
        self.queue.put_nowait((self.parser.get_method(), self._url.decode("latin-1"), self._headers,
                               b"".join(self._body)))

    async def _serve(self):
        while True:
            method, url, headers, body = await self.queue.get()
            path = url.split("?", 1)[0]
            if method == b"POST" and path.startswith(SEND_PREFIX) and path.endswith(SEND_SUFFIX):
                reply = await self.gw.send(path[len(SEND_PREFIX):-len(SEND_SUFFIX)], headers, body)
            elif method == b"GET" and path == "/healthz":
                reply = self.gw.health()
            else:
                reply = _error(404, "NOT_FOUND", f"no route for {method.decode()} {path}")
            if self.transport.is_closing():
                return
            self._write(*reply)

    def _write(self, status: int, headers: dict, body: bytes):
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)


async def serve(host: str, port: int, db: Path, token: str, project: str, faults: dict) -> None:
    import signal

    store = Store(db)
    gw = Gateway(store, token, project, faults)
    writer = asyncio.create_task(store.writer())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(gw), host, port, backlog=2048)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    while not store.queue.empty():        # every queued receipt is committed before exit
        await asyncio.sleep(0.01)
    writer.cancel()
    store.db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8480)
    ap.add_argument("--project", default="hermes-local")
    ap.add_argument("--db", type=Path, required=True, help="SQLite receipt log")
    ap.add_argument("--config", type=Path, help="fault-injection JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise SystemExit(f"{TOKEN_ENV} is not set: the gateway does not run without authentication")
    faults = json.loads(args.config.read_text()) if args.config else {}
    log.info("gateway on http://%s:%d project %s, receipts %s, faults %s", args.host, args.port, args.project,
             args.db, faults or "none")
    import gc

    gc.freeze()                        # the receipts index only grows: keep the collector off the old objects
    gc.set_threshold(50_000, 20, 100)
    try:
        import uvloop
        uvloop.run(serve(args.host, args.port, args.db, token, args.project, faults))
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.db, token, args.project, faults))


if __name__ == "__main__":
    main()
