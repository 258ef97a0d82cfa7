"""Load conf/ (platform.yaml + scenes/*.yaml + triggers/*.yaml), validate it, and give it a version (content hash).

Every problem is reported with its file, line and key; a run works from a JSON snapshot of the
validated config so that every output of one run carries one config version.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from core.config.schema import HermesConfig, Platform, Scene, Trigger
from core.settings import REPO_ROOT

DEFAULT_CONF = REPO_ROOT / "conf"


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key or '(file)'}: {self.message}"


class ConfigError(ValueError):
    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__(f"{len(problems)} configuration problem(s):\n  " + "\n  ".join(map(str, problems)))


@dataclass(frozen=True)
class LoadedConfig:
    config: HermesConfig
    version: str
    files: tuple[str, ...]


def _lines(node, path=()) -> dict[tuple, int]:
    """Map each key path in a composed YAML node tree to its 1-based line."""
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = path + (k.value,)
            out[key] = k.start_mark.line + 1
            out.update({p: ln for p, ln in _lines(v, key).items() if p != key})
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_lines(v, path + (i,)))
    return out


def _read(path: Path, root: Path, problems: list[ConfigProblem]):
    rel = str(path.relative_to(root.parent)) if path.is_relative_to(root.parent) else str(path)
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problems.append(ConfigProblem(rel, mark.line + 1 if mark else None, "", f"not valid YAML: {e.problem}"
                                      if hasattr(e, "problem") else f"not valid YAML: {e}"))
        return rel, None, {}
    if not isinstance(data, dict):
        problems.append(ConfigProblem(rel, 1, "", "must be a mapping of keys to values"))
        return rel, None, {}
    return rel, data, _lines(node) if node is not None else {}


def _keys_at(model, path: tuple) -> list[str]:
    """The keys the model accepts at a location (its fields and their aliases), following nested models through
    lists, tuples, dicts and optionals; [] where the location is not a model."""
    import typing

    from pydantic import BaseModel

    def models_in(tp):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return [tp]
        return [m for a in typing.get_args(tp) for m in models_in(a)]

    current = [model]
    for part in path:
        if isinstance(part, int):
            continue
        nxt = []
        for m in current:
            f = m.model_fields.get(part) or next((f for f in m.model_fields.values() if f.alias == part), None)
            if f is not None:
                nxt += models_in(f.annotation)
        current = nxt
        if not current:
            return []
    return sorted({k for m in current for n, f in m.model_fields.items() for k in (n, f.alias) if k})


def _model_problems(err: ValidationError, rel: str, lines: dict, model=None) -> list[ConfigProblem]:
    import difflib

    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        line = None
        for n in range(len(loc), -1, -1):   # the deepest located prefix
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _keys_at(model, loc[:-1]), n=1, cutoff=0.6) if model else []
            msg = f"unknown key: did you mean {close[0]!r}?" if close else "unknown key (misspelt?)"
        elif e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"must be one of {e['ctx']['expected']}"
        out.append(ConfigProblem(rel, line, ".".join(str(p) for p in loc), msg))
    return out


def config_version(config: HermesConfig) -> str:
    return _digest(config.model_dump(mode="json"))


def _digest(document: dict) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return "cfg-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _load_each(files: list[Path], model, kind: str, root: Path, problems: list[ConfigProblem]) -> list[tuple]:
    """One model per file (id = file name, ids unique): [(model, file, key lines)]; problems appended."""
    out: list[tuple] = []
    seen: dict[str, str] = {}
    for f in files:
        rel, data, lines = _read(f, root, problems)
        if data is None:
            continue
        try:
            item = model.model_validate(data)
        except ValidationError as e:
            problems += _model_problems(e, rel, lines, model)
            continue
        if item.id != f.stem:
            problems.append(ConfigProblem(rel, lines.get(("id",)), "id",
                                          f"{kind} id {item.id!r} must match its file name {f.stem!r}"))
        if item.id in seen:
            problems.append(ConfigProblem(rel, lines.get(("id",)), "id", f"duplicate of {seen[item.id]}"))
        seen[item.id] = rel
        out.append((item, rel, lines))
    return out


def load_config(conf_dir: Path | str = DEFAULT_CONF) -> LoadedConfig:
    """Validate all of conf/ and return it with its version; raise ConfigError listing every problem."""
    root = Path(conf_dir)
    problems: list[ConfigProblem] = []
    platform_file = root / "platform.yaml"
    scene_files = sorted((root / "scenes").glob("*.yaml"))
    if not platform_file.exists():
        raise ConfigError([ConfigProblem(str(platform_file), None, "", "missing: the platform settings file")])
    if not scene_files:
        raise ConfigError([ConfigProblem(str(root / "scenes"), None, "", "no scene files (scenes/<id>.yaml)")])

    platform = None
    rel, data, lines = _read(platform_file, root, problems)
    if data is not None:
        try:
            platform = Platform.model_validate(data)
        except ValidationError as e:
            problems += _model_problems(e, rel, lines, Platform)

    scenes = _load_each(scene_files, Scene, "scene", root, problems)
    seen = {s.id for s, _, _ in scenes}
    trigger_files = sorted((root / "triggers").glob("*.yaml"))
    triggers = _load_each(trigger_files, Trigger, "trigger", root, problems)
    for t, rel, lines in triggers:
        if t.then.scene not in seen:
            problems.append(ConfigProblem(rel, lines.get(("then", "scene")), "then.scene",
                                          f"{t.then.scene!r} is not a scene; scenes: {sorted(seen)}"))
    if problems:
        raise ConfigError(problems)
    try:
        config = HermesConfig(platform=platform, scenes=tuple(x for x, _, _ in scenes),
                              triggers=tuple(x for x, _, _ in triggers))
    except ValidationError as e:
        raise ConfigError([ConfigProblem(str(root), None, ".".join(map(str, x["loc"])),
                                         x["msg"].removeprefix("Value error, ")) for x in e.errors()]) from None
    files = tuple(str(p.relative_to(root)) for p in [platform_file, *scene_files, *trigger_files])
    return LoadedConfig(config=config, version=config_version(config), files=files)


def write_snapshot(loaded: LoadedConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": loaded.version, "files": loaded.files,
                                "config": loaded.config.model_dump(mode="json")}, indent=2, sort_keys=True))
    return path


def read_snapshot(path: Path) -> LoadedConfig:
    doc = json.loads(Path(path).read_text())
    try:
        config = HermesConfig.model_validate(doc["config"])
    except ValidationError as e:
        raise ConfigError([ConfigProblem(str(path), None, ".".join(map(str, x["loc"])), x["msg"])
                           for x in e.errors()]) from None
    # the version is the hash of the config as it was frozen (a newer schema may add defaulted keys)
    if _digest(doc["config"]) != doc["version"]:
        raise ConfigError([ConfigProblem(str(path), None, "version", "snapshot content does not match its version")])
    return LoadedConfig(config=config, version=doc["version"], files=tuple(doc["files"]))
