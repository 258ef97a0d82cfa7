"""The Configuration Center UI: a small FastAPI app on 127.0.0.1 for operators who do not edit YAML.

    hermes ui          (make ui starts it beside Airflow and MLflow; port HERMES_UI_PORT, default 8090)

Pages: login; scenes and trigger rules with their state; a scene's edit form with errors next to the
fields, a preview on the latest nightly outputs, save (versioned YAML, audit line, stale edits refused)
and enable/disable. The same operations as JSON under /api for scripts and tests. Why FastAPI: it is
already in the stack (Airflow and MLflow serve with it), and Jinja2 + HTML forms need no front-end build.

Authentication: an operator logs in with a name and the operator token (HERMES_UI_TOKEN, generated into
$HERMES_HOME/secrets.env); the session cookie is the name and an expiry signed with HMAC over the token
(HttpOnly, SameSite=Strict, Max-Age SESSION_S; the server refuses an expired one whatever the browser
keeps). Every page but /login needs it; nothing is writable anonymously. A POST whose Origin (or, without
one, Referer) is not this server is refused (403): SameSite does not separate other ports of 127.0.0.1,
which are the same site.
"""
from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import DictLoader, Environment, select_autoescape

from configcenter import operators, store
from configcenter.preview import preview
from core.config.loader import ConfigError, load_config
from core.settings import Settings
from core.warehouse import Warehouse

COOKIE = "hermes_operator"

PAGES = {
    "base.html": """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ title }} · Hermes</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;max-width:980px;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}th{background:#f4f4f4}.err{color:#b00020;font-size:13px}
label{display:block;margin-top:10px;font-weight:600}input[type=text],textarea{width:100%;max-width:640px}
.ok{color:#1a7f37}.box{border:1px solid #ccc;padding:8px 12px;margin:12px 0;background:#fafafa}
nav{margin-bottom:16px}button{margin-right:8px}</style></head><body>
<nav><a href="/">Scenes and rules</a>{% if who %} · signed in as <b>{{ who }}</b>
<form method="post" action="/logout" style="display:inline"><button type="submit" id="sign-out">Sign out</button></form>
{% endif %}</nav>
{% block body %}{% endblock %}</body></html>""",
    "login.html": """{% extends "base.html" %}{% block body %}<h1>Hermes Configuration Center</h1>
{% if error %}<p class="err" id="login-error">{{ error }}</p>{% endif %}
<form method="post" action="/login"><label>Your operator token<input type="password" name="token" required></label>
<p><button type="submit">Sign in</button></p><p>No token? Ask an admin: <code>hermes ui-operator add &lt;your name&gt;</code></p>
</form>{% endblock %}""",
    "error.html": """{% extends "base.html" %}{% block body %}<h1>{{ title }}</h1>
<p class="err" id="error">{{ detail }}</p><p><a href="/">Back to the scenes and rules</a></p>{% endblock %}""",
    "toggle.html": """{% macro toggle(kind, id, enabled, sha, rules) %}<form method="post"
action="/{{ kind }}/{{ id }}/toggle" style="display:inline" {% if enabled %}onsubmit="return confirm('Disable {{ id }}?
{%- if rules %} Trigger rules {{ rules|join(', ') }} push it and will send nothing.{% endif %}')"{% endif %}>
<input type="hidden" name="base_sha" value="{{ sha }}">{% if enabled %}<input type="text" name="reason"
placeholder="why disable?" required size="14" aria-label="reason for disabling {{ id }}">{% endif %}
<button type="submit">{{ "Disable" if enabled else "Enable" }}</button></form>{% endmacro %}""",
    "history.html": """{% extends "base.html" %}{% block body %}<h1>History of {{ label }} <code>{{ scene_id }}</code></h1>
<p><a href="/{{ kind }}/{{ scene_id }}">back to the form</a></p>
{% if message %}<p class="{{ 'ok' if ok else 'err' }}" id="message">{{ message }}</p>{% endif %}
{% if not versions %}<p id="no-history">No earlier version: it was never changed here.</p>{% endif %}
{% for v in versions %}<div class="box version" id="v-{{ loop.index }}"><b>{{ v.at }}</b> (sha {{ v.sha }}){% for a in v.audit %}
· {{ a.action }} by <b>{{ a.who }}</b>{% if a.reason %}: {{ a.reason }}{% endif %}{% endfor %}
<pre class="diff">{{ v.diff or "(the same as now)" }}</pre>
<form method="post" action="/{{ kind }}/{{ scene_id }}/rollback"><input type="hidden" name="version" value="{{ v.name }}">
<input type="hidden" name="base_sha" value="{{ base_sha }}"><input type="text" name="reason" placeholder="why roll back?" required>
<button type="submit" onclick="return confirm('Roll {{ scene_id }} back to {{ v.at }}?')">Roll back to this version</button></form></div>
{% endfor %}{% endblock %}""",
    "index.html": """{% extends "base.html" %}{% from "toggle.html" import toggle %}{% block body %}<h1>Scenes and trigger rules</h1>
<p>config version <code id="version">{{ version }}</code></p>
<table id="scenes"><tr><th>scene</th><th>name</th><th>trigger</th><th>priority</th><th>feed</th><th>state</th><th></th></tr>
{% for s in scenes %}<tr><td><a href="/scenes/{{ s.id }}">{{ s.id }}</a></td><td>{{ s.name }}</td><td>{{ s.trigger }}</td>
<td>{{ s.priority }}</td><td>{{ s.feed_size }}</td><td>{{ "enabled" if s.enabled else "disabled" }}</td>
<td>{{ toggle("scenes", s.id, s.enabled, shas[s.id], targets.get(s.id, [])) }} <a href="/scenes/{{ s.id }}/history">history</a></td>
</tr>{% endfor %}</table>
<h2>Trigger rules</h2>
<table id="triggers"><tr><th>rule</th><th>when</th><th>if</th><th>then</th><th>delay</th><th>unless</th><th>state</th></tr>
{% for t in triggers %}<tr>
<td><a href="/triggers/{{ t.id }}">{{ t.id }}</a></td><td>{{ t.when.event }}</td><td>{{ t.condition or "" }}</td><td>{{ t.then.scene }}</td>
<td>{{ t.delay_minutes }} min</td><td>{{ t.unless|join(", ") }}</td>
<td>{{ "enabled" if t.enabled else "disabled" }}{% if t.enabled and t.then.scene in disabled %}
<div class="err" id="warn-{{ t.id }}">targets the disabled scene {{ t.then.scene }}: it sends nothing</div>{% endif %}
{{ toggle("triggers", t.id, t.enabled, shas['t:' ~ t.id], []) }} <a href="/triggers/{{ t.id }}/history">history</a></td>
</tr>{% endfor %}</table>
<h2>New scene</h2><form method="post" action="/scenes/new" id="new-scene"><label>Id (lower_snake_case)
<input type="text" name="new_id" required></label><label>Start from <select name="copy_of">{% for s in scenes %}
<option value="{{ s.id }}">{{ s.id }}</option>{% endfor %}</select></label>
<p><button type="submit">Create (disabled until you enable it)</button></p></form>
{% endblock %}""",
    "scene.html": """{% extends "base.html" %}{% block body %}<h1>{{ label }} <code>{{ scene_id }}</code></h1>
<p><a href="/{{ kind }}/{{ scene_id }}/history" id="history-link">history and rollback</a></p>
{% if warning %}<p class="err" id="warning">{{ warning }}</p>{% endif %}
{% if message %}<p class="{{ 'ok' if ok else 'err' }}" id="message">{{ message }}</p>{% endif %}
<form method="post" action="/{{ kind }}/{{ scene_id }}"><input type="hidden" name="base_sha" value="{{ base_sha }}">
{% for f, label, kind in fields %}<label for="{{ f }}">{{ label }}</label>
{% if kind == "bool" %}<select name="{{ f }}" id="{{ f }}"><option value="true" {% if values[f] %}selected{% endif %}>enabled</option>
<option value="false" {% if not values[f] %}selected{% endif %}>disabled</option></select>
{% elif kind == "text" %}<textarea name="{{ f }}" id="{{ f }}" rows="2">{{ values[f] }}</textarea>
{% else %}<input type="text" name="{{ f }}" id="{{ f }}" value="{{ values[f] }}">{% endif %}
{% if errors.get(f) %}<div class="err" id="error-{{ f|replace('.', '-') }}">{{ errors[f] }}</div>{% endif %}{% endfor %}
{% for k, v in errors.items() if k not in field_names %}<div class="err">{{ k }}: {{ v }}</div>{% endfor %}
<p><button type="submit" name="action" value="preview" id="preview-button">Validate{% if kind == "scenes" %} and preview{% endif %}</button>
<button type="submit" name="action" value="save" id="save-button">Save</button></p></form>
{% if pv %}<div class="box" id="preview">{% if pv.available %}<b>Preview</b> on the nightly features of {{ pv.features_ds }}:
audience <b id="pv-audience">{{ pv.audience }}</b>, eligible <b id="pv-eligible">{{ pv.eligible }}</b>,
expected opens <b id="pv-opens">{{ pv.expected_opens }}</b><br>suppressed:
{% for k, v in pv.suppressed.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}
(one reason per user; audience = suppressed + eligible)<br><span id="pv-scored">{% if pv.scene_mean_p_open is none %}
no user of this scene was scored by the latest nightly: no expected opens yet{% else %}the latest nightly scored
{{ pv.scored_users }} of the {{ pv.eligible }} eligible users for this scene; the other {{ pv.eligible - pv.scored_users }}
count at the scene's mean p(open) {{ pv.scene_mean_p_open }}{% endif %}</span>
{% else %}{{ pv.why }}{% endif %}</div>{% endif %}{% endblock %}""",
}
TRIGGER_FIELDS = [("name", "Name", "line"), ("enabled", "State", "bool"),
                  ("if", "If (a rule on the user; empty: always)", "text"),
                  ("then.scene", "Then push scene", "line"), ("delay_minutes", "Delay (minutes)", "line"),
                  ("unless", "Unless (comma-separated: bought, item_sold, item_removed, replied)", "line"),
                  ("regap_hours", "Not again for the same user and item within (hours)", "line")]
FIELDS = [("name", "Name", "line"), ("enabled", "State", "bool"), ("priority", "Priority (1-100)", "line"),
          ("feed_size", "Feed size (1-6)", "line"), ("audience", "Audience rule", "text"),
          ("template.title", "Title template", "line"), ("template.body", "Body template", "text"),
          ("cap.max_pushes", "Cap: pushes", "line"), ("cap.days", "Cap: per days", "line")]


FIELDS_OF = {"scenes": FIELDS, "triggers": TRIGGER_FIELDS}


SESSION_S = 8 * 3600          # a working day; then sign in again


def _sign(token: str, who: str) -> str:
    return hmac.new(token.encode(), who.encode(), hashlib.sha256).hexdigest()


def _session(token: str, who: str, now: float) -> str:
    expires = str(int(now + SESSION_S))
    return f"{who}.{expires}.{_sign(token, who + '|' + expires)}"


def _same_origin(request: Request) -> bool:
    """A browser names the page that sent a POST in Origin (or Referer); it must be this server. A client
    that sends neither (curl, scripts) is not a browser that can be tricked into posting."""
    from urllib.parse import urlsplit

    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return True
    u = urlsplit(source)
    return f"{u.scheme}://{u.netloc}" == f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


async def _json_object(request: Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "the request body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("fields", {}), dict):
        raise HTTPException(400, 'the request body must be a JSON object: {"fields": {...}, "base_sha": "..."}')
    return body


def create_app(settings: Settings, token: str) -> FastAPI:
    if not token or len(token) < 12:
        raise ValueError("HERMES_UI_TOKEN must be set (12+ characters): the UI never runs without authentication")
    conf = Path(settings.conf_dir)
    audit = settings.home / "audit" / "config.log"
    wh = Warehouse(settings.warehouse)
    env = Environment(loader=DictLoader(PAGES), autoescape=select_autoescape(["html"]))
    app = FastAPI(title="Hermes Configuration Center", docs_url=None, redoc_url=None)
    app.state.settings = settings

    revoked: set[str] = set()            # sessions signed out before they expire

    def page(name: str, **kw) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**kw))

    @app.middleware("http")
    async def refuse_cross_origin(request: Request, call_next):
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            return JSONResponse({"ok": False, "error": "cross-origin request refused"}, status_code=403)
        return await call_next(request)

    def operator(request: Request) -> str:
        import time

        raw = request.cookies.get(COOKIE, "")
        if raw in revoked:
            raw = ""
        rest, _, sig = raw.rpartition(".")
        who, _, expires = rest.rpartition(".")
        if (who and expires.isdigit() and int(expires) > time.time()
                and hmac.compare_digest(sig, _sign(token, who + "|" + expires)) and operators.active(settings.home, who)):
            return who
        if request.url.path.startswith("/api/"):
            raise HTTPException(401, "sign in first (POST /login)")
        raise HTTPException(303, headers={"Location": "/login"})

    @app.get("/login", response_class=HTMLResponse)
    def login_form():
        return page("login.html", title="Sign in", who=None)

    @app.post("/login")
    def login(token_: str = Form(..., alias="token")):
        who = operators.who(settings.home, token_, token)
        if who is None:
            return HTMLResponse(env.get_template("login.html").render(title="Sign in", who=None,
                                                                       error="unknown token"), status_code=401)
        r = RedirectResponse("/", status_code=303)
        import time

        r.set_cookie(COOKIE, _session(token, who, time.time()), max_age=SESSION_S, httponly=True, samesite="strict")
        return r

    @app.get("/", response_class=HTMLResponse)
    def index(who: str = Depends(operator)):
        loaded = load_config(conf)
        shas = {s.id: store.file_sha(store.scene_path(conf, s.id)) for s in loaded.config.scenes}
        shas |= {f"t:{t.id}": store.file_sha(store.scene_path(conf, t.id, "triggers")) for t in loaded.config.triggers}
        disabled = {sc.id for sc in loaded.config.scenes if not sc.enabled}
        targets: dict[str, list[str]] = {}
        for t in loaded.config.triggers:
            if t.enabled:
                targets.setdefault(t.then.scene, []).append(t.id)
        return page("index.html", title="Scenes", who=who, version=loaded.version, scenes=loaded.config.scenes,
                    triggers=loaded.config.triggers, shas=shas, disabled=disabled, targets=targets)

    def holdout_of() -> float:
        return load_config(conf).config.platform.holdout_share

    def form_values(doc: dict, kind: str) -> dict:
        """What the form shows: the values with the schema's defaults filled in (a key left out of the
        YAML, like `enabled`, must not show — and then save — as something else)."""
        from pydantic import ValidationError

        try:
            doc = store.KINDS[kind][0].model_validate(doc).model_dump(mode="json", by_alias=True)
        except ValidationError:
            doc = {"enabled": True, **doc}
        values = {f: store._get(doc, f) for f, _, _ in FIELDS_OF[kind]}
        if kind == "triggers":
            values["unless"] = ", ".join(values["unless"] or [])
            values["if"] = values["if"] or ""
        return values

    def warning_for(kind: str, doc: dict) -> str | None:
        """A rule that would push a disabled scene sends nothing; a scene that enabled rules push, when disabled."""
        scenes = {sc.id: sc for sc in load_config(conf).config.scenes}
        if kind == "triggers":
            target = (doc.get("then") or {}).get("scene")
            if doc.get("enabled", True) and target in scenes and not scenes[target].enabled:
                return f"this rule pushes the scene {target}, which is disabled: it sends nothing until the scene is enabled"
        elif doc.get("enabled", True) is False:
            rules = [t.id for t in load_config(conf).config.triggers if t.enabled and t.then.scene == doc.get("id")]
            if rules:
                return f"disabled, while the trigger rules {', '.join(rules)} push it: they send nothing"
        return None

    def scene_page(scene_id, who, doc, base_sha, errors=None, pv=None, message=None, ok=False, status=200,
                   kind="scenes"):
        fields = FIELDS_OF[kind]
        return HTMLResponse(env.get_template("scene.html").render(warning=warning_for(kind, doc),
            title=scene_id, who=who, scene_id=scene_id, kind=kind, label="Scene" if kind == "scenes" else "Trigger rule",
            values=form_values(doc, kind), base_sha=base_sha, fields=fields, field_names={f for f, _, _ in fields},
            errors=errors or {}, pv=pv, message=message, ok=ok), status_code=status)

    def kind_of(kind: str) -> str:
        if kind not in FIELDS_OF:
            raise HTTPException(404, f"no {kind!r} here")
        return kind

    @app.post("/scenes/new")
    async def create(request: Request, who: str = Depends(operator)):
        form = dict(await request.form())
        new_id, copy_of = form.get("new_id", "").strip(), form.get("copy_of", "")
        try:
            doc, _ = store.current(conf, copy_of)
            doc = {**doc, "id": new_id, "name": f"Copy of {doc.get('name', copy_of)}", "enabled": False}
            store.save(conf, new_id, doc, "", who, audit, create=True)
        except (KeyError, ValueError, store.StaleEdit) as e:
            raise HTTPException(422, f"cannot create scene {new_id!r}: {e}") from None
        return RedirectResponse(f"/scenes/{new_id}", status_code=303)

    @app.get("/{kind}/{scene_id}", response_class=HTMLResponse)
    def edit(kind: str, scene_id: str, who: str = Depends(operator)):
        kind = kind_of(kind)
        try:
            doc, sha = store.current(conf, scene_id, kind)
        except KeyError as e:
            raise HTTPException(404, e.args[0]) from None
        return scene_page(scene_id, who, doc, sha, kind=kind)

    @app.post("/{kind}/{scene_id}", response_class=HTMLResponse)
    async def submit(kind: str, scene_id: str, request: Request, who: str = Depends(operator)):
        kind = kind_of(kind)
        form = dict(await request.form())
        base = form.get("base_sha", "")
        try:
            doc, _ = store.current(conf, scene_id, kind)
        except KeyError as e:
            raise HTTPException(404, e.args[0]) from None
        edited = store.apply_form(doc, form, kind)
        check = store.validate(conf, scene_id, edited, kind)
        if not check.ok:
            return scene_page(scene_id, who, edited, base, errors=check.errors,
                              message="not valid: see the fields marked", status=422, kind=kind)
        if form.get("action") == "save":
            try:
                store.save(conf, scene_id, edited, base, who, audit, kind)
            except store.StaleEdit as e:
                return scene_page(scene_id, who, edited, base, message=str(e), status=409, kind=kind)
            doc, sha = store.current(conf, scene_id, kind)
            return scene_page(scene_id, who, doc, sha, message=f"saved; config version {load_config(conf).version}",
                              ok=True, kind=kind)
        pv = preview(wh, scene_id, edited["audience"], holdout_of()) if kind == "scenes" else None
        return scene_page(scene_id, who, edited, base, pv=pv, message="valid", ok=True, kind=kind)

    @app.post("/{kind}/{scene_id}/toggle")
    async def toggle(kind: str, scene_id: str, request: Request, who: str = Depends(operator)):
        kind = kind_of(kind)
        form = dict(await request.form())
        try:
            doc, _ = store.current(conf, scene_id, kind)
        except KeyError as e:
            raise HTTPException(404, e.args[0]) from None
        enable = not doc.get("enabled", True)
        reason = str(form.get("reason", "")).strip()
        if not enable and not reason:
            raise HTTPException(422, f"say why you disable {scene_id} (the reason goes to the audit log)")
        doc = {**doc, "enabled": enable}
        try:
            store.save(conf, scene_id, doc, form.get("base_sha", ""), who, audit, kind, reason=reason or None,
                       action="enable" if enable else "disable")
        except store.StaleEdit as e:
            raise HTTPException(409, str(e)) from None
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        return RedirectResponse("/", status_code=303)

    @app.get("/{kind}/{scene_id}/history", response_class=HTMLResponse)
    def history_page(kind: str, scene_id: str, who: str = Depends(operator), message: str | None = None,
                     ok: bool = False, status: int = 200):
        import difflib
        import json as _json

        kind = kind_of(kind)
        try:
            store.scene_path(conf, scene_id, kind)
        except KeyError as e:
            raise HTTPException(404, e.args[0]) from None
        path = store.scene_path(conf, scene_id, kind)
        now = path.read_text()
        audits: dict[str, list] = {}
        if audit.exists():
            for line in audit.read_text().splitlines():
                a = _json.loads(line)
                if a.get("previous"):
                    audits.setdefault(Path(a["previous"]).name, []).append(a)
        versions = []
        for v in store.history(conf, scene_id, kind):
            diff = "".join(difflib.unified_diff(v["text"].splitlines(True), now.splitlines(True),
                                                f"{scene_id}.yaml@{v['at']}", f"{scene_id}.yaml (now)"))
            # the audit of the change that replaced this version: who, what, why
            versions.append({**v, "diff": diff, "audit": audits.get(v["name"], [])})
        return HTMLResponse(env.get_template("history.html").render(
            title=f"history of {scene_id}", who=who, kind=kind, scene_id=scene_id, versions=versions,
            base_sha=store.file_sha(path), label="scene" if kind == "scenes" else "trigger rule", message=message,
            ok=ok), status_code=status)

    @app.post("/{kind}/{scene_id}/rollback", response_class=HTMLResponse)
    async def rollback(kind: str, scene_id: str, request: Request, who: str = Depends(operator)):
        import yaml

        kind = kind_of(kind)
        form = dict(await request.form())
        versions = {v["name"]: v for v in store.history(conf, scene_id, kind)}
        v = versions.get(str(form.get("version", "")))
        if v is None:
            raise HTTPException(404, f"{scene_id} has no version {form.get('version')!r}")
        reason = str(form.get("reason", "")).strip()
        if not reason:
            raise HTTPException(422, "say why you roll back (the reason goes to the audit log)")
        try:
            store.save(conf, scene_id, yaml.safe_load(v["text"]), form.get("base_sha", ""), who, audit, kind,
                       reason=reason, action=f"rollback to {v['at']}", text=v["text"])
        except store.StaleEdit as e:
            return history_page(kind, scene_id, who, message=str(e), status=409)
        except ValueError as e:
            return history_page(kind, scene_id, who, message=f"that version is not valid today: {e}", status=422)
        return history_page(kind, scene_id, who, message=f"rolled back to {v['at']}; config version "
                            f"{load_config(conf).version}", ok=True)

    @app.post("/logout")
    def logout(request: Request):
        raw = request.cookies.get(COOKIE, "")
        if raw:
            revoked.add(raw)            # the cookie is refused from now on, even if a copy of it survives
        r = RedirectResponse("/login", status_code=303)
        r.delete_cookie(COOKIE)
        return r

    # ---- JSON API (scripts, tests) ------------------------------------------------------------------
    @app.get("/api/scenes/{scene_id}")
    def api_get(scene_id: str, who: str = Depends(operator)):
        try:
            doc, sha = store.current(conf, scene_id)
        except KeyError as e:
            raise HTTPException(404, e.args[0]) from None
        return {"scene": doc, "base_sha": sha}

    @app.post("/api/scenes/{scene_id}/{action}")
    async def api_action(scene_id: str, action: str, request: Request, who: str = Depends(operator)):
        if action not in ("validate", "preview", "save"):
            raise HTTPException(404, f"no action {action!r}")
        body = await _json_object(request)
        try:
            doc, _ = store.current(conf, scene_id)
        except KeyError as e:
            raise HTTPException(404, e.args[0]) from None
        edited = store.apply_form(doc, body["fields"] if "fields" in body else {})
        check = store.validate(conf, scene_id, edited)
        if not check.ok:
            return JSONResponse({"ok": False, "errors": check.errors}, status_code=422)
        if action == "validate":
            return {"ok": True}
        if action == "preview":
            return {"ok": True, "preview": preview(wh, scene_id, edited["audience"], holdout_of())}
        if action == "save":
            try:
                record = store.save(conf, scene_id, edited, body.get("base_sha", ""), who, audit)
            except store.StaleEdit as e:
                return JSONResponse({"ok": False, "error": str(e)}, status_code=409)
            return {"ok": True, "audit": record}
        raise HTTPException(404, f"no action {action!r}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        """The API answers JSON; a page a person opened answers a page that says what went wrong."""
        from fastapi.exception_handlers import http_exception_handler

        if request.url.path.startswith("/api/") or not 400 <= exc.status_code < 600:
            return await http_exception_handler(request, exc)
        titles = {400: "Bad request", 401: "Sign in first", 403: "Refused", 404: "Not found", 409: "Changed meanwhile",
                  422: "Not valid"}
        return HTMLResponse(env.get_template("error.html").render(
            title=titles.get(exc.status_code, f"Error {exc.status_code}"), detail=str(exc.detail),
            who=None), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ConfigError)
    def config_error(request: Request, exc: ConfigError):
        return JSONResponse({"ok": False, "errors": [str(p) for p in exc.problems]}, status_code=500)

    return app


def main() -> None:
    import os

    import uvicorn

    settings = Settings.from_env()
    app = create_app(settings, os.environ.get("HERMES_UI_TOKEN", ""))
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("HERMES_UI_PORT", "8090")), log_level="info")


if __name__ == "__main__":
    main()
