"""Config: layering and provenance, strict validation with messages that name key, value and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from sketches.errors import ConfigError
from streams import config as cfg


def test_defaults_validate_and_every_key_has_a_description():
    loaded = cfg.load(environ={})
    assert loaded.config.co_action.pair_window_s == 30.0
    assert set(loaded.sources.values()) == {"default"}
    for section, model in cfg.SECTIONS.items():
        for key, info in model.model_fields.items():
            assert info.description, f"{section}.{key} has no description"


def test_layers_later_wins_and_sources_are_reported(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text("[co_action]\npair_window_s = 30\nmin_weight = 7\n[burst]\nmin_count = 3\n")
    loaded = cfg.load(
        f,
        preset="sensitive",
        sets=["co_action.min_weight=9"],
        environ={"COORDWATCH_BURST__MIN_COUNT": "4", "UNRELATED": "x"},
    )
    c, src = loaded.config, loaded.sources
    assert (c.co_action.pair_window_s, src["co_action.pair_window_s"]) == (30.0, f"file {f}")
    assert (c.co_action.min_weight, src["co_action.min_weight"]) == (9, "--set co_action.min_weight")
    assert (c.burst.min_count, src["burst.min_count"]) == (4, "env COORDWATCH_BURST__MIN_COUNT")
    assert (c.near_duplicate.threshold, src["near_duplicate.threshold"]) == (0.4, "preset sensitive")
    assert src["burst.pane_s"] == "default"


def test_set_values_are_toml_literals():
    c = cfg.load(
        sets=['topics.events=["a", "b"]', "kafka.broker=kafka://h:1", "burst.conservative_update=false"],
        environ={},
    ).config
    assert c.topics.events == ["a", "b"]
    assert c.kafka.broker == "kafka://h:1"
    assert c.burst.conservative_update is False


def test_config_is_frozen():
    c = cfg.load(environ={}).config
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        c.co_action.pair_window_s = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("sets", "must_mention"),
    [
        (["co_action.pair_window_s=-5"], ["co_action.pair_window_s", "-5", "--set", "> 0"]),
        (["co_action.pair_window_s=abc"], ["co_action.pair_window_s", "'abc'", "number"]),
        (["co_action.pair_windows_s=5"], ["co_action.pair_windows_s", "unknown key", "pair_window_s"]),
        (["bogus.key=1"], ["bogus", "unknown section", "co_action"]),
        (["burst.pane_s=7200"], ["burst.pane_s = 7200", "burst.window_s = 3600", "<= window_s"]),
        (["burst.pane_s=700"], ["burst.window_s", "multiple", "700"]),
        (["co_action.memory_s=10"], ["co_action.memory_s = 10", "pair_window_s"]),
        (["near_duplicate.lsh_bands=4"], ["lsh_bands = 4", "lsh_rows = None", "both or neither"]),
        (["kafka.security_protocol=SASL_SSL"], ["kafka.sasl_mechanism", "kafka.sasl_password"]),
        (["co_action.object_fields=['x']"], ["co_action.object_fields", "'object_id'"]),
        (["nodots=1"], ["section.key"]),
        (["work.shards={linking=2}"], ["work.shards.linking = 2", "only co_action, near_duplicate, burst split",
                                       "remove linking"]),
        (["work.shards={near_duplicate=11}"], ["work.shards.near_duplicate = 11", "has 10", "at most 10 parts"]),
        (["work.shards={near_duplicate=4}", "near_duplicate.lsh_bands=3", "near_duplicate.lsh_rows=4"],
         ["work.shards.near_duplicate = 4", "has 3", "near_duplicate.lsh_bands"]),
        (["work.shards={co_action=2}", "co_action.one_object_actions=['retweet']"],
         ["work.shards.co_action = 2", "co_action.one_object_actions = ['retweet']", "set work.shards.co_action = 1"]),
        (["work.shards={burst=0}"], ["work.shards.burst = 0", "1 to 64"]),
        (["kafka.event_loop=trio"], ["kafka.event_loop", "'trio'", "'asyncio'", "'uvloop'"]),
    ],
)
def test_errors_name_key_value_and_what_is_allowed(sets, must_mention):
    with pytest.raises(ConfigError) as err:
        cfg.load(sets=sets, environ={})
    for text in must_mention:
        assert text in str(err.value)


def test_bad_env_and_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="COORDWATCH_<SECTION>__<KEY>"):
        cfg.load(environ={"COORDWATCH_BROKER": "x"})
    with pytest.raises(ConfigError, match=r"co_action.min_weight = 0 \(from env"):
        cfg.load(environ={"COORDWATCH_CO_ACTION__MIN_WEIGHT": "0"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[co_action\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfg.load(bad, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        cfg.load(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="no such preset"):
        cfg.load(preset="nope", environ={})


def test_show_output_is_a_valid_config_that_reloads_to_the_same(tmp_path: Path):
    loaded = cfg.load(preset="high-precision", sets=["kafka.sasl_password=hunter2"], environ={})
    text = cfg.to_toml(loaded)
    assert "hunter2" not in text
    f = tmp_path / "shown.toml"
    sets = ["work.shards={burst=3}"]  # an inline table
    f.write_text(cfg.to_toml(cfg.load(preset="high-precision", sets=sets, environ={})))
    assert cfg.load(f, environ={}).config == cfg.load(preset="high-precision", sets=sets, environ={}).config


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_cli_show_check_and_exit_code_2(tmp_path: Path):
    ok = _cli("config", "show", "--set", "co_action.min_weight=4")
    assert ok.returncode == 0, ok.stderr
    assert "min_weight = 4" in ok.stdout and "# --set co_action.min_weight" in ok.stdout

    bad = _cli("config", "show", "--set", "burst.pane_s=7200")
    assert bad.returncode == 2
    assert "burst.pane_s = 7200" in bad.stderr

    good_file = tmp_path / "good.toml"
    good_file.write_text("[near_duplicate]\nthreshold = 0.85\n")
    assert _cli("config", "check", str(good_file)).returncode == 0
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text("[near_duplicate]\nthreshold = 1.5\n")
    res = _cli("config", "check", str(bad_file))
    assert res.returncode == 2 and "near_duplicate.threshold = 1.5" in res.stderr and "<= 1" in res.stderr
