"""The Configuration Center's write side: validate a scene edit exactly as `hermes config validate` does,
save it as versioned YAML with an audit line, refuse a save based on a stale copy.

- Validation: the edited scene through the same pydantic schema, then the whole conf/ (with the edit in
  place, in a temporary copy) through `load_config` — so cross-file rules hold too. Errors come back per
  field.
- Versions: before a file is replaced, its current content is kept in conf/.history/<scene>/<ts>-<sha>.yaml;
  the new content is written atomically (temp file + rename). The config version (content hash of all of
  conf/) changes with it.
- Concurrency: every form carries the SHA-256 of the file it was opened from; a save whose base is not the
  file's current SHA is refused (HTTP 409), never silently merged or lost.
- Audit: one JSON line per change in $HERMES_HOME/audit/config.log — who, when, which scene, which fields
  changed from what to what, the config version before and after.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.config.loader import ConfigError, load_config
from core.config.schema import Scene, Trigger

EDITABLE = ("name", "enabled", "priority", "feed_size", "audience", "template.title", "template.body",
            "cap.max_pushes", "cap.days")
KINDS = {   # folder -> (model, editable fields, integer fields, list fields)
    "scenes": (Scene, EDITABLE, {"priority", "feed_size", "cap.max_pushes", "cap.days"}, set()),
    "triggers": (Trigger, ("name", "enabled", "if", "then.scene", "delay_minutes", "unless", "regap_hours"),
                 {"delay_minutes", "regap_hours"}, {"unless"}),
}


class StaleEdit(RuntimeError):
    pass


@dataclass(frozen=True)
class Validation:
    ok: bool
    errors: dict          # field -> message
    scene: Scene | None


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scene_path(conf: Path, scene_id: str, kind: str = "scenes", must_exist: bool = True) -> Path:
    if kind not in KINDS:
        raise KeyError(f"no kind {kind!r}")
    path = conf / kind / f"{scene_id}.yaml"
    if Path(scene_id).name != scene_id or (must_exist and not path.exists()):
        raise KeyError(f"no {kind[:-1]} {scene_id!r}")
    return path


def current(conf: Path, scene_id: str, kind: str = "scenes") -> tuple[dict, str]:
    path = scene_path(conf, scene_id, kind)
    return yaml.safe_load(path.read_text()), file_sha(path)


def apply_form(doc: dict, form: dict, kind: str = "scenes") -> dict:
    """The document with the editable fields from a form (strings) applied."""
    _, editable, ints, lists = KINDS[kind]
    out = json.loads(json.dumps(doc))
    for field in editable:
        if field not in form:
            continue
        value = form[field]
        if field == "enabled":
            value = str(value).lower() in ("1", "true", "on", "yes")
        elif field == "if" and not str(value).strip():
            out.pop("if", None)
            continue
        elif field in lists:
            value = [v.strip() for v in str(value).split(",") if v.strip()] if isinstance(value, str) else value
        elif field in ints:
            try:
                value = int(value)
            except (TypeError, ValueError):
                pass                      # the schema reports it as a type error on this field
        node = out
        *parents, leaf = field.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def field_of(loc: list[str], fields) -> tuple[str, list[str]]:
    """The form field a validation error belongs to (the longest field that prefixes its location) and the rest of
    the location; a location no field holds keeps its own dotted name."""
    for n in range(len(loc), 0, -1):
        if ".".join(loc[:n]) in fields:
            return ".".join(loc[:n]), loc[n:]
    return ".".join(loc) or "scene", []


def validate(conf: Path, scene_id: str, doc: dict, kind: str = "scenes") -> Validation:
    from pydantic import ValidationError

    try:
        scene = KINDS[kind][0].model_validate(doc)
    except ValidationError as e:
        errors: dict[str, str] = {}
        for err in e.errors():
            key, rest = field_of([str(p) for p in err["loc"]], KINDS[kind][1])
            msg = err["msg"].removeprefix("Value error, ")
            # a list field's item: "unless.0" shows under `unless`, naming the item
            msg = f"item {int(rest[0]) + 1}: {msg}" if rest and rest[0].isdigit() else msg
            errors[key] = f"{errors[key]}; {msg}" if key in errors else msg
        return Validation(False, errors, None)
    if scene.id != scene_id:
        return Validation(False, {"id": f"the id cannot change here (was {scene_id!r})"}, None)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "conf"
        shutil.copytree(conf, copy, ignore=shutil.ignore_patterns(".history"))
        (copy / kind).mkdir(exist_ok=True)
        (copy / kind / f"{scene_id}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        try:
            load_config(copy)
        except ConfigError as e:
            return Validation(False, {p.key or "scene": p.message for p in e.problems}, None)
    return Validation(True, {}, scene)


def _round_trip(old_text: str, doc: dict) -> str:
    """`doc` written over the file's own text: the keys that changed are set, the ones it no longer has removed, and
    everything else - comments, key order, quoting, blank lines - stays as the file had it (ruamel.yaml's round
    trip; PyYAML would rewrite the whole file and drop every comment)."""
    import io

    from ruamel.yaml import YAML

    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096
    node = rt.load(old_text) if old_text.strip() else None
    if not isinstance(node, dict):
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)

    def merge(target, new: dict) -> None:
        for k in [k for k in target if k not in new]:
            del target[k]
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(target.get(k), dict):
                merge(target[k], v)
            elif k not in target or target[k] != v:
                target[k] = v

    merge(node, doc)
    out = io.StringIO()
    rt.dump(node, out)
    return out.getvalue()


def history(conf: Path, scene_id: str, kind: str = "scenes") -> list[dict]:
    """The file's earlier versions, newest first: [{"name", "at", "sha", "text"}] (written by every save)."""
    folder = conf / ".history" / (scene_id if kind == "scenes" else f"{kind}-{scene_id}")
    out = []
    for f in sorted(folder.glob("*.yaml"), reverse=True):
        stamp, _, sha = f.stem.partition("-")
        out.append({"name": f.name, "at": stamp, "sha": sha, "text": f.read_text()})
    return out


def save(conf: Path, scene_id: str, doc: dict, base_sha: str, who: str, audit_log: Path, kind: str = "scenes",
         create: bool = False, reason: str | None = None, action: str = "edit", text: str | None = None) -> dict:
    """Validate and write; StaleEdit if the file changed since `base_sha` (or, creating, if it exists);
    returns the audit record. The file keeps its formatting and comments (only what changed is rewritten);
    `text` (a rollback) is written as it is."""
    path = scene_path(conf, scene_id, kind, must_exist=not create)
    check = validate(conf, scene_id, doc, kind)
    if not check.ok:
        raise ValueError(json.dumps(check.errors))
    if create and path.exists():
        raise StaleEdit(f"{kind[:-1]} {scene_id} already exists")
    old_text = "" if create else path.read_text()
    if not create and hashlib.sha256(old_text.encode()).hexdigest() != base_sha:
        raise StaleEdit(f"scene {scene_id} was changed by someone else since you opened it; reload and redo "
                        "your edit")
    before = load_config(conf).version
    history = conf / ".history" / (scene_id if kind == "scenes" else f"{kind}-{scene_id}")
    history.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    if not create:
        (history / f"{stamp}-{base_sha[:12]}.yaml").write_text(old_text)
    new_text = text if text is not None else _round_trip(old_text, doc)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(new_text)
    os.replace(tmp, path)
    after = load_config(conf).version
    old_doc = yaml.safe_load(old_text) or {}
    changes = {f: {"from": _get(old_doc, f), "to": _get(doc, f)} for f in KINDS[kind][1]
               if _get(old_doc, f) != _get(doc, f)}
    record = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "who": who, "kind": kind[:-1],
              "created": create, "action": "create" if create else action, "reason": reason,
              "scene" if kind == "scenes" else "trigger": scene_id,
              "changes": changes, "config_version": {"from": before, "to": after},
              "previous": None if create else str(history / f"{stamp}-{base_sha[:12]}.yaml"),
              "diff": "".join(difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True),
                                                   f"{scene_id}.yaml@{base_sha[:12]}", f"{scene_id}.yaml"))}
    audit_log.parent.mkdir(parents=True, exist_ok=True)
    with audit_log.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def _get(doc: dict, field: str):
    node = doc
    for p in field.split("."):
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node
