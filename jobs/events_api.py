"""The live event API: what an app backend publishes user events and item changes to while Hermes runs.

    hermes events-api [--port 8470]          (infra/stream.sh starts it on 127.0.0.1, with the engine)

    POST /v1/events        {"events": [{"ts": "2026-10-30T12:00:00Z", "user_id": 7, "event_type": "fav",
                                        "item_id": 42, "event_id": "app-123"}, ...]}
    POST /v1/item_changes  {"item_changes": [{"ts": ..., "item_id": 42, "change": "price_drop", "price": 80.0}]}
    Authorization: Bearer $HERMES_EVENTS_TOKEN

The rows are the raw contract's (core/contract.py; `ts` ISO 8601 with a zone, or epoch seconds), plus an optional
`event_id` for retries; a `listed` change may carry `seller_id` and `category_id` for an item the items snapshot
does not have yet. The answer, once the accepted rows are committed (durable): 200 {"accepted", "duplicates",
"rejected": [{"index", "reason"}]} — a rejected row is in the stream's quarantine with its reason; 422 when every
row was rejected; 401 without the token. GET /v1/stats: counts and the engine's health; GET /v1/quarantine: the
latest rejected rows. OpenAPI docs at /docs.
"""
from __future__ import annotations

import hmac
import os

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from core.settings import Settings
from delivery.stream import TABLES, EventStream

TOKEN_ENV = "HERMES_EVENTS_TOKEN"
MAX_ROWS = 10_000


def create_app(settings: Settings, token: str | None = None) -> FastAPI:
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    stream = EventStream(settings.ledger_url)
    app = FastAPI(title="Hermes live events", description=__doc__)

    def auth(request: Request) -> None:
        if not token:
            return
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, f"a bearer token is required (${TOKEN_ENV})")

    async def publish(table: str, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, f"{table}: rule=json_body: the body is not JSON") from None
        rows = body.get(table) if isinstance(body, dict) and table in body else body
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, list):
            raise HTTPException(400, f"{table}: rule=json_body: expected {{\"{table}\": [...]}}, a list, or one row")
        if len(rows) > MAX_ROWS:
            raise HTTPException(413, f"{table}: rule=max_rows: {len(rows)} rows in one request, at most {MAX_ROWS}")
        out = stream.publish(table, rows)
        status = 422 if rows and not out["accepted"] and not out["duplicates"] else 200
        return JSONResponse(out, status_code=status)

    def endpoint(table: str):
        async def post(request: Request) -> JSONResponse:
            return await publish(table, request)
        return post

    for table in TABLES:
        app.add_api_route(f"/v1/{table}", endpoint(table), methods=["POST"], dependencies=[Depends(auth)],
                          summary=f"publish {table} rows")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "head": stream.head()}

    @app.get("/v1/stats", dependencies=[Depends(auth)])
    def stats() -> dict:
        from jobs.stream import health

        return {**stream.counts(), "engine": health(settings)}

    @app.get("/v1/quarantine", dependencies=[Depends(auth)])
    def quarantine(limit: int = 100) -> list[dict]:
        return stream.quarantined(min(max(limit, 1), 1000))

    return app


def main(settings: Settings, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False)
