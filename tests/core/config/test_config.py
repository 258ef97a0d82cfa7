"""`hermes config validate` passes on the shipped config and pinpoints each broken fixture."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.config.loader import ConfigError, load_config, read_snapshot, write_snapshot
from core.settings import REPO_ROOT

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "broken_conf"

# case -> fragments the error must contain: file:line, key, what is allowed / wrong.
EXPECTED = {
    "misspelt_key": ["conf/scenes/guess_you_like.yaml:5", "feedsize", "unknown key: did you mean 'feed_size'?"],
    "feed_too_big": ["conf/scenes/guess_you_like.yaml:5", "feed_size", "less than or equal to 6"],
    "audience_unknown_feature": ["conf/scenes/hot_items.yaml:6", "audience", "unknown feature 'income'"],
    "audience_sql": ["conf/scenes/hot_items.yaml:6", "audience", "statement separators"],
    "audience_function": ["conf/scenes/hot_items.yaml:6", "audience", "function calls are not allowed"],
    "unknown_trigger": ["conf/scenes/hot_items.yaml:3", "trigger",
                        "must be one of 'scheduled', 'personalised_time' or 'real_time'"],
    "unknown_material_source": ["conf/scenes/hot_items.yaml:7", "materials.source", "must be one of"],
    "template_placeholder": ["conf/scenes/hot_items.yaml:9", "template.title", "unknown placeholder(s) ['user_name']"],
    "id_mismatch": ["conf/scenes/hot_items.yaml:1", "id", "must match its file name 'hot_items'"],
    "unknown_platform_quota": ["conf/platform.yaml:3", "platform_quotas", "unknown platform 'android_nokia'"],
    "bad_yaml": ["conf/scenes/hot_items.yaml:5", "not valid YAML"],
    "negative_cap": ["conf/platform.yaml:2", "fatigue.max_per_user_per_day", "greater than or equal to 1"],
    "shortlist_below_feed_cap": ["conf/platform.yaml:2", "feed", "shortlist_per_category (2) must be at least "
                                 "max_per_category (3)"],
    "rule_unknown_scene": ["conf/triggers/fav_price_drop.yaml:5", "then.scene", "'price_drop_favs' is not a scene"],
    "rule_bad_event": ["conf/triggers/fav_price_drop.yaml:3", "when.event", "must be one of 'price_drop'"],
    "rule_sql_condition": ["conf/triggers/fav_price_drop.yaml:4", "if", "statement separators"],
    "rule_misspelt_key": ["conf/triggers/fav_price_drop.yaml:8", "regap_hour", "did you mean 'regap_hours'?"],
}


def broken_conf(case: str, tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    shutil.copytree(FIXTURES / case, conf, dirs_exist_ok=True)
    return conf


def test_shipped_config_is_valid_and_versioned():
    loaded = load_config()
    assert len(loaded.config.scenes) >= 8
    assert loaded.version.startswith("cfg-") and len(loaded.version) == 16
    triggers = {s.trigger for s in loaded.config.scenes}
    assert triggers == {"scheduled", "personalised_time", "real_time"}
    assert all(1 <= s.feed_size <= 6 for s in loaded.config.scenes)
    kinds = {t.when.event for t in loaded.config.triggers}
    assert kinds == {"price_drop", "seller_listed", "selling_out", "chat_waiting"}


def test_every_fixture_has_an_expectation():
    assert sorted(p.name for p in FIXTURES.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_broken_config_is_rejected_precisely(case, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(broken_conf(case, tmp_path))
    text = str(err.value)
    for fragment in EXPECTED[case]:
        assert fragment in text, f"{case}: {fragment!r} not in:\n{text}"


def test_cli_exits_non_zero_and_prints_each_problem(tmp_path):
    conf = broken_conf("audience_sql", tmp_path)
    shutil.copytree(FIXTURES / "feed_too_big", conf, dirs_exist_ok=True)
    hermes = Path(sys.executable).parent / "hermes"
    out = subprocess.run([str(hermes), "config", "validate", "--conf", str(conf)], capture_output=True, text=True,
                         env=os.environ, timeout=60)
    assert out.returncode == 1
    assert "INVALID" in out.stdout
    assert "hot_items.yaml:6: audience" in out.stdout and "guess_you_like.yaml:5: feed_size" in out.stdout
    ok = subprocess.run([str(hermes), "config", "validate"], capture_output=True, text=True, env=os.environ,
                        timeout=60)
    assert ok.returncode == 0 and "is valid, version cfg-" in ok.stdout


def test_version_is_a_content_hash(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    v1 = load_config(conf).version
    (conf / "scenes" / "hot_items.yaml").write_text(
        (conf / "scenes" / "hot_items.yaml").read_text() + "\n# a comment changes nothing\n")
    assert load_config(conf).version == v1
    text = (conf / "scenes" / "hot_items.yaml").read_text().replace("priority: 10", "priority: 11")
    (conf / "scenes" / "hot_items.yaml").write_text(text)
    assert load_config(conf).version != v1


def test_snapshot_round_trips_and_detects_tampering(tmp_path):
    loaded = load_config()
    path = write_snapshot(loaded, tmp_path / "config.json")
    assert read_snapshot(path).version == loaded.version
    path.write_text(path.read_text().replace('"priority": 90', '"priority": 91'))
    with pytest.raises(ConfigError, match="does not match its version"):
        read_snapshot(path)


def test_a_snapshot_frozen_before_a_new_defaulted_setting_still_reads_with_its_version(tmp_path):
    import hashlib
    import json

    loaded = load_config()
    doc = json.loads(write_snapshot(loaded, tmp_path / "config.json").read_text())
    del doc["config"]["triggers"]                      # as written by a version without triggers
    del doc["config"]["platform"]["windows"]
    canonical = json.dumps(doc["config"], sort_keys=True, separators=(",", ":"))
    doc["version"] = "cfg-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = read_snapshot(tmp_path / "old.json")
    assert old.version == doc["version"] and old.config.triggers == () and old.config.platform.windows.policy == "hermes"
