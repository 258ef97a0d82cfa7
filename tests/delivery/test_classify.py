"""How gateway answers map to what the sender does (no server needed)."""
from __future__ import annotations

import pytest

from delivery.gateway import AUTH, DEAD_TOKEN, OK, REJECTED, RETRY, _parse_head, classify, fcm_body


def fcm_error(code: int, status: str, error_code: str | None = None) -> dict:
    e = {"error": {"code": code, "status": status, "message": "x"}}
    if error_code:
        e["error"]["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                  "errorCode": error_code}]
    return e


@pytest.mark.parametrize("status,body,retry_after,kind,ra", [
    (200, {"name": "projects/p/messages/1"}, None, OK, None),
    (404, fcm_error(404, "NOT_FOUND", "UNREGISTERED"), None, DEAD_TOKEN, None),
    (400, fcm_error(400, "INVALID_ARGUMENT", "UNREGISTERED"), None, DEAD_TOKEN, None),   # FCM's other form
    (429, fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), "7", RETRY, 7.0),
    (503, fcm_error(503, "UNAVAILABLE"), "2", RETRY, 2.0),
    (500, None, None, RETRY, None),
    (502, None, "soon", RETRY, None),                         # an unparseable Retry-After is ignored
    (400, fcm_error(400, "INVALID_ARGUMENT"), None, REJECTED, None),
    (401, fcm_error(401, "UNAUTHENTICATED"), None, AUTH, None),
    (403, fcm_error(403, "PERMISSION_DENIED"), None, AUTH, None),
])
def test_answers_are_classified(status, body, retry_after, kind, ra):
    out = classify(status, body, retry_after)
    assert out.kind == kind and out.retry_after == ra and out.status == status


def test_response_heads_are_parsed_and_chunked_bodies_refused():
    assert _parse_head(b"HTTP/1.1 429 Too Many\r\nContent-Length: 12\r\nRetry-After: 3") == (429, 12, "3")
    with pytest.raises(ValueError, match="chunked"):
        _parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")


def test_the_fcm_body_carries_the_token_only_in_the_message():
    body = fcm_body({"device_token": "secret-token", "title": "t", "body": "b", "idempotency_key": "k",
                     "scene_id": "s", "user_id": 5, "item_ids": [1, 2], "platform": "ios"})
    assert b'"token": "secret-token"' in body and body.count(b"secret-token") == 1
    assert b'"item_ids": "1,2"' in body
