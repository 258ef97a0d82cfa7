"""The Configuration Center UI and API: auth, validation, preview, versioned save, stale edits, audit."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from fastapi.testclient import TestClient

from configcenter.app import create_app
from core.config.loader import load_config
from core.settings import REPO_ROOT, Settings
from core.warehouse import Warehouse

TOKEN = "operator-token-0123456789"


def build(tmp_path) -> dict:
    """A copy of conf/ and a tiny "latest nightly" in a temporary home."""
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    settings = Settings.from_env({"HERMES_HOME": str(tmp_path / "home"), "HERMES_CONF": str(conf)})
    wh = Warehouse(settings.warehouse)
    # a tiny "latest nightly": 6 users' features, raw users, suppressions and scores for hot_items
    wh.write_arrow(pa.table({"user_id": pa.array(range(1, 7), pa.int64()),
                             "n_app_open_28d": pa.array([0, 1, 2, 3, 4, 5], pa.int32())}),
                   "features/user_features", "2026-10-30", "cfg-x")
    users = pa.table({"user_id": pa.array(range(1, 7), pa.int64()), "opt_in": [True, True, False, True, True, True],
                      "device_token": ["t1", "t2", "t3", "", "t5", "t6"]})
    wh.raw("users").mkdir(parents=True)
    import pyarrow.parquet as pq
    pq.write_table(users, wh.raw("users") / "part-0.parquet")
    wh.write_arrow(pa.table({"user_id": pa.array([5], pa.int64()), "scene_id": ["hot_items"], "reason": ["daily_cap"]}),
                   "plan/suppressed", "2026-10-30", "cfg-x")
    wh.write_arrow(pa.table({"user_id": pa.array([2, 2, 6], pa.int64()), "scene_id": ["hot_items"] * 3,
                             "p_open": [0.1, 0.3, 0.2]}), "plan/scored", "2026-10-30", "cfg-x")
    return {"conf": conf, "settings": settings}


@pytest.fixture()
def env(tmp_path):
    made = build(tmp_path)
    return {**made, "client": TestClient(create_app(made["settings"], TOKEN))}


def login(client, who="ana"):
    """Signs in as `who` with a token of their own (admin: the deployment's HERMES_UI_TOKEN)."""
    from configcenter import operators

    tok = TOKEN if who == "admin" else operators.add(client.app.state.settings.home, who)
    r = client.post("/login", data={"token": tok}, follow_redirects=False)
    assert r.status_code == 303
    return client


def test_nothing_is_readable_or_writable_without_signing_in(env):
    c = env["client"]
    assert c.get("/", follow_redirects=False).status_code == 303
    assert c.post("/api/scenes/hot_items/save", json={"fields": {"priority": 11}}).status_code == 401
    assert c.post("/login", data={"who": "eve", "token": "guess"}).status_code == 401
    c.cookies.set("hermes_operator", "eve.0000")
    assert c.post("/api/scenes/hot_items/save", json={"fields": {"priority": 11}}).status_code == 401


def test_validation_reports_errors_per_field_with_the_same_rules_as_the_cli(env):
    c = login(env["client"])
    r = c.post("/api/scenes/hot_items/validate", json={"fields": {"feed_size": "9", "audience": "n_app_open_28d >= 1; drop table users"}})
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert "less than or equal to 6" in errors["feed_size"] and "statement separators" in errors["audience"]
    page = c.post("/scenes/hot_items", data={"audience": "income > 3", "action": "preview", "base_sha": "x"})
    assert page.status_code == 422 and "unknown feature &#39;income&#39;" in page.text and 'id="error-audience"' in page.text


def test_preview_counts_the_audience_suppression_and_expected_opens(env):
    c = login(env["client"])
    r = c.post("/api/scenes/hot_items/preview", json={"fields": {"audience": "n_app_open_28d >= 1"}})
    pv = r.json()["preview"]
    # users 2-6 match; 3 opted out, 4 has no token, 5 was capped last night -> 2 and 6 eligible
    assert pv["audience"] == 5 and pv["eligible"] == 2
    assert pv["suppressed"] == {"holdout": 0, "opted_out": 1, "no_device_token": 1, "dead_token": 0, "daily_cap": 1}
    assert sum(pv["suppressed"].values()) + pv["eligible"] == pv["audience"]
    assert pv["expected_opens"] == pytest.approx(0.3 + 0.2) and pv["scored_users"] == 2
    page = c.post("/scenes/hot_items", data={"audience": "n_app_open_28d >= 1", "action": "preview"}).text
    assert "scored\n2 of the 2 eligible users" in page


def test_preview_counts_each_suppressed_user_once_in_fatigues_order(env):
    """Issue 22.7: a user with two history reasons counted twice (343 + 66 + 55 = 464 against 460 suppressed), and
    a held-out user who opted out counted as opted out and again as held out."""
    wh = Warehouse(env["settings"].warehouse)
    wh.write_arrow(pa.table({"user_id": pa.array([5, 5, 6, 3], pa.int64()), "scene_id": ["hot_items"] * 4,
                             "reason": ["scene_cap", "daily_cap", "holdout", "holdout"]}),
                   "plan/suppressed", "2026-10-30", "cfg-x")
    from configcenter.preview import preview
    from features.holdout import in_holdout

    share = 0.5
    held = {u for u in range(2, 7) if in_holdout(pa.array([u]).to_numpy(), share)[0]}
    pv = preview(wh, "hot_items", "n_app_open_28d >= 1", share)
    assert sum(pv["suppressed"].values()) + pv["eligible"] == pv["audience"] == 5
    assert pv["suppressed"]["holdout"] == len(held)
    assert pv["suppressed"].get("daily_cap", 0) == (5 not in held)        # daily_cap comes before scene_cap
    assert "scene_cap" not in pv["suppressed"]
    assert pv["suppressed"]["opted_out"] == (3 not in held)


def test_save_versions_the_file_audits_it_and_refuses_a_stale_edit(env):
    c = login(env["client"], "ana")
    before = load_config(env["conf"]).version
    base = c.get("/api/scenes/hot_items").json()["base_sha"]
    r = c.post("/api/scenes/hot_items/save", json={"fields": {"priority": "11"}, "base_sha": base})
    assert r.status_code == 200, r.text
    after = load_config(env["conf"]).version
    assert after != before and yaml.safe_load((env["conf"] / "scenes" / "hot_items.yaml").read_text())["priority"] == 11
    history = list((env["conf"] / ".history" / "hot_items").glob("*.yaml"))
    assert len(history) == 1 and yaml.safe_load(history[0].read_text())["priority"] == 10     # recoverable
    line = json.loads((env["settings"].home / "audit" / "config.log").read_text().splitlines()[-1])
    assert line["who"] == "ana" and line["changes"] == {"priority": {"from": 10, "to": 11}}
    assert line["config_version"] == {"from": before, "to": after}
    # a second operator saves from the same (now stale) copy: refused, nothing lost
    bob = login(TestClient(env["client"].app), "bob")
    r = bob.post("/api/scenes/hot_items/save", json={"fields": {"priority": "12"}, "base_sha": base})
    assert r.status_code == 409 and "changed by someone else" in r.json()["error"]
    assert yaml.safe_load((env["conf"] / "scenes" / "hot_items.yaml").read_text())["priority"] == 11


def test_a_hostile_rule_is_rejected_and_nothing_is_written(env):
    c = login(env["client"])
    path = env["conf"] / "scenes" / "hot_items.yaml"
    before = path.read_text()
    base = c.get("/api/scenes/hot_items").json()["base_sha"]
    for rule in ("__import__('os').system('id')", "n_app_open_28d >= 1 or 1=1 --", "open('x')"):
        r = c.post("/api/scenes/hot_items/save", json={"fields": {"audience": rule}, "base_sha": base})
        assert r.status_code == 422 and "audience" in r.json()["errors"]
    assert path.read_text() == before and not (env["conf"] / ".history").exists()


def test_the_list_shows_scenes_and_rules_and_enable_disable_toggles(env):
    c = login(env["client"])
    page = c.get("/")
    assert "hot_items" in page.text and "fav_price_drop" in page.text and load_config(env["conf"]).version in page.text
    sha = c.get("/api/scenes/hot_items").json()["base_sha"]
    no_reason = c.post("/scenes/hot_items/toggle", data={"base_sha": sha}, follow_redirects=False)
    assert no_reason.status_code == 422 and "say why you disable hot_items" in no_reason.text
    r = c.post("/scenes/hot_items/toggle", data={"base_sha": sha, "reason": "stock-out week"}, follow_redirects=False)
    assert r.status_code == 303
    assert yaml.safe_load((env["conf"] / "scenes" / "hot_items.yaml").read_text())["enabled"] is False
    line = json.loads(Path(env["settings"].home / "audit" / "config.log").read_text().splitlines()[-1])
    assert (line["action"], line["reason"]) == ("disable", "stock-out week")
    sha = c.get("/api/scenes/hot_items").json()["base_sha"]          # enabling needs no reason
    assert c.post("/scenes/hot_items/toggle", data={"base_sha": sha}, follow_redirects=False).status_code == 303


def test_the_form_shows_defaults_for_keys_the_yaml_leaves_out(env):
    c = login(env["client"])
    page = c.get("/scenes/hot_items").text          # hot_items.yaml has no `enabled:` key: enabled by default
    assert '<option value="true" selected>enabled</option>' in page


def test_trigger_rules_are_edited_validated_and_toggled_like_scenes(env):
    c = login(env["client"], "ana")
    path = env["conf"] / "triggers" / "fav_price_drop.yaml"
    base = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    bad = c.post("/triggers/fav_price_drop", data={"then.scene": "no_such_scene", "action": "save", "base_sha": base})
    assert bad.status_code == 422 and "is not a scene" in bad.text
    hostile = c.post("/triggers/fav_price_drop", data={"if": "1=1; drop table users", "action": "save", "base_sha": base})
    assert hostile.status_code == 422 and "statement separators" in hostile.text
    ok = c.post("/triggers/fav_price_drop", data={"delay_minutes": "15", "unless": "bought, item_sold", "if": "",
                                                  "action": "save", "base_sha": base})
    assert ok.status_code == 200 and "saved; config version" in ok.text
    saved = yaml.safe_load(path.read_text())
    assert saved["delay_minutes"] == 15 and saved["unless"] == ["bought", "item_sold"] and "if" not in saved
    assert load_config(env["conf"]).config.triggers[1].delay_minutes == 15
    sha = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert c.post("/triggers/fav_price_drop/toggle", data={"base_sha": sha, "reason": "a test"},
                  follow_redirects=False).status_code == 303
    assert yaml.safe_load(path.read_text())["enabled"] is False


def test_a_new_scene_is_created_from_a_copy_disabled_and_audited(env):
    c = login(env["client"], "ana")
    r = c.post("/scenes/new", data={"new_id": "weekend_deals", "copy_of": "hot_items"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/scenes/weekend_deals"
    doc = yaml.safe_load((env["conf"] / "scenes" / "weekend_deals.yaml").read_text())
    assert doc["id"] == "weekend_deals" and doc["enabled"] is False
    assert "weekend_deals" in {s.id for s in load_config(env["conf"]).config.scenes}
    again = c.post("/scenes/new", data={"new_id": "weekend_deals", "copy_of": "hot_items"}, follow_redirects=False)
    bad = c.post("/scenes/new", data={"new_id": "Bad Id!", "copy_of": "hot_items"}, follow_redirects=False)
    assert again.status_code == 422 and bad.status_code == 422
    line = json.loads((env["settings"].home / "audit" / "config.log").read_text().splitlines()[-1])
    assert line["created"] is True and line["scene"] == "weekend_deals" and line["who"] == "ana"


def test_unknown_scenes_and_bodies_that_are_not_json_objects_are_client_errors_not_500(env):
    """Issue 25.7: an unknown scene id or a non-JSON body answered 500."""
    c = login(env["client"])
    assert c.get("/api/scenes/no_such_scene").status_code == 404
    r = c.post("/api/scenes/no_such_scene/validate", json={"fields": {}})
    assert r.status_code == 404 and "no_such_scene" in r.text
    assert c.post("/scenes/no_such_scene/toggle", data={"base_sha": ""}).status_code == 404
    for body in (b"not json", b"[1, 2]", b'{"fields": [1]}', b"\xff\xfe"):
        r = c.post("/api/scenes/hot_items/validate", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.text, (body, r.status_code, r.text)
    assert c.post("/api/scenes/hot_items/explode", json={}).status_code == 404
    assert c.post("/api/scenes/hot_items/validate", json={"fields": {}}).json() == {"ok": True}


def test_a_post_from_another_origin_is_refused_even_with_the_session_cookie(env):
    """Issue 25.7: SameSite=Strict does not separate another port of 127.0.0.1 (same site), so a page served
    there could post with the operator's cookie."""
    c = login(env["client"])
    evil = {"origin": "http://127.0.0.1:9999"}
    r = c.post("/api/scenes/hot_items/save", json={"fields": {"priority": 11}}, headers=evil)
    assert r.status_code == 403 and "cross-origin" in r.text
    assert c.post("/scenes/hot_items/toggle", data={}, headers={"referer": "http://evil.example/x"}).status_code == 403
    assert c.post("/login", data={"who": "ana", "token": TOKEN}, headers=evil).status_code == 403
    own = {"origin": "http://testserver"}                       # the TestClient's own origin passes
    assert c.post("/api/scenes/hot_items/validate", json={"fields": {}}, headers=own).status_code == 200


def test_the_session_expires_in_the_cookie_and_on_the_server(env, monkeypatch):
    import time

    from configcenter import app as ui

    c = env["client"]
    r = c.post("/login", data={"who": "ana", "token": TOKEN}, follow_redirects=False)
    cookie = r.headers["set-cookie"]
    assert f"Max-Age={ui.SESSION_S}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert c.get("/api/scenes/hot_items").status_code == 200
    later = time.time() + ui.SESSION_S + 1                     # a cookie the browser kept past its age is refused
    monkeypatch.setattr(time, "time", lambda: later)
    assert c.get("/api/scenes/hot_items").status_code == 401
    # a forged expiry does not pass the signature
    who, expires, sig = c.cookies.get("hermes_operator").split(".")
    c.cookies.set("hermes_operator", f"{who}.{int(later) + 999}.{sig}")
    assert c.get("/api/scenes/hot_items").status_code == 401


def test_a_bad_list_item_shows_under_its_field_and_a_bad_scene_id_answers_a_page(env):
    """Issue 22.8: the `unless` error showed as raw `unless.0: ...` under no field; an unknown scene id answered a
    raw JSON error page."""
    c = login(env["client"], "ana")
    path = env["conf"] / "triggers" / "fav_price_drop.yaml"
    base = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    bad = c.post("/triggers/fav_price_drop", data={"unless": "bought, shipped", "action": "validate", "base_sha": base})
    assert bad.status_code == 422
    field = bad.text.split('name="unless"', 1)[1].split("<label", 1)[0]
    assert 'class="err"' in field and "item 2:" in field and "unless.1" not in bad.text
    for url in ("/scenes/no_such_scene", "/triggers/no_such_rule", "/widgets/x"):
        r = c.get(url)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), url
        assert "<h1>Not found</h1>" in r.text and '"detail"' not in r.text
    made = c.post("/scenes/new", data={"new_id": "Bad Id!", "copy_of": "hot_items"})
    assert made.status_code == 422 and "cannot create scene" in made.text and made.text.startswith("<!doctype html>")
    assert c.get("/api/scenes/no_such_scene").json()["detail"]          # the API still answers JSON


def test_the_team_tool_history_diff_rollback_warnings_formatting_and_sign_out(env):
    """Issue 22: a history page with diff and one-click rollback, a reason on disable, a warning when a rule pushes a
    disabled scene, saves that keep the file's formatting, sign-out."""
    c = login(env["client"], "ana")
    path = env["conf"] / "scenes" / "price_drop_fav.yaml"
    original = path.read_text()
    path.write_text("# owned by the growth team: ask #growth before you change the feed\n" + original)
    base = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    saved = c.post("/scenes/price_drop_fav", data={"priority": "33", "action": "save", "base_sha": base})
    assert saved.status_code == 200 and "saved; config version" in saved.text
    # only the changed line differs: the comment, the order, the quoting and the other lines stay as they were
    assert "priority: 90" in original
    assert path.read_text() == ("# owned by the growth team: ask #growth before you change the feed\n"
                                + original.replace("priority: 90", "priority: 33"))
    # disabling the scene a rule pushes: the rule's row and the rule's page warn
    sha = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert c.post("/scenes/price_drop_fav/toggle", data={"base_sha": sha, "reason": "legal review"},
                  follow_redirects=False).status_code == 303
    index = c.get("/").text
    assert 'id="warn-fav_price_drop"' in index and "targets the disabled scene price_drop_fav" in index
    assert "which is disabled: it sends nothing" in c.get("/triggers/fav_price_drop").text
    assert "the trigger rules fav_price_drop push it" in c.get("/scenes/price_drop_fav").text
    # the history: two earlier versions, newest first, each with its diff to now and who changed it why
    hist = c.get("/scenes/price_drop_fav/history").text
    assert hist.count('class="box version"') == 2 and "legal review" in hist and "-enabled: true" not in hist
    assert "+enabled: false" in hist and "+priority: 33" in hist
    name = re.findall(r'name="version" value="([^"]+)"', hist)[-1]          # the oldest: before both changes
    now_sha = re.search(r'name="base_sha" value="([0-9a-f]{64})"', hist).group(1)
    assert c.post("/scenes/price_drop_fav/rollback", data={"version": name, "base_sha": now_sha}).status_code == 422
    back = c.post("/scenes/price_drop_fav/rollback", data={"version": name, "base_sha": now_sha,
                                                            "reason": "the review is over"})
    assert back.status_code == 200 and "rolled back to" in back.text
    assert path.read_text() == "# owned by the growth team: ask #growth before you change the feed\n" + original
    line = json.loads(Path(env["settings"].home / "audit" / "config.log").read_text().splitlines()[-1])
    assert line["action"].startswith("rollback to") and line["reason"] == "the review is over" and line["who"] == "ana"
    stale = c.post("/scenes/price_drop_fav/rollback", data={"version": name, "base_sha": now_sha, "reason": "again"})
    assert stale.status_code == 409                                       # the file changed since that page
    # sign-out: the cookie is refused afterwards, even a copy of it
    cookie = c.cookies.get("hermes_operator")
    assert c.post("/logout", follow_redirects=False).status_code == 303
    c.cookies.set("hermes_operator", cookie)
    assert c.get("/api/scenes/hot_items").status_code == 401


def test_each_operator_signs_in_with_their_own_token_and_is_named_by_it(env, tmp_path):
    """Issue 22: operators were named by a typed name behind one shared token."""
    import subprocess
    import sys

    from configcenter import operators

    home = env["settings"].home
    out = subprocess.run([sys.executable, "-m", "jobs.cli", "ui-operator", "add", "bo"], capture_output=True,
                         text=True, env={**__import__("os").environ, "HERMES_HOME": str(home)}, timeout=60)
    assert out.returncode == 0, out.stderr
    bo_token = out.stdout.split("token ")[1].strip()
    assert bo_token not in operators.path(home).read_text()                       # only its hash is kept
    assert oct(operators.path(home).stat().st_mode & 0o777) == "0o600"
    c = env["client"]
    assert c.post("/login", data={"token": "not-a-token"}).status_code == 401
    assert c.post("/login", data={"who": "ana", "token": "x" * 30}).status_code == 401   # a typed name is no key
    assert c.post("/login", data={"token": bo_token}, follow_redirects=False).status_code == 303
    assert "signed in as <b>bo</b>" in c.get("/").text
    sha = c.get("/api/scenes/hot_items").json()["base_sha"]
    c.post("/scenes/hot_items/toggle", data={"base_sha": sha, "reason": "bo's test"}, follow_redirects=False)
    line = json.loads((home / "audit" / "config.log").read_text().splitlines()[-1])
    assert line["who"] == "bo"
    operators.remove(home, "bo")                                                   # removed: the session ends
    assert c.get("/api/scenes/hot_items").status_code == 401
    assert c.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303
    assert "signed in as <b>admin</b>" in c.get("/").text
