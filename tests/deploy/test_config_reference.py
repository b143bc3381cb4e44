"""docs/config.md is the config reference rendered from the model, and says what the model says."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from streams.cli import cli
from streams.config import SECTIONS
from streams.config_reference import REGENERATE, env_var, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_docs_config_md_is_the_rendered_reference() -> None:
    assert DOC.read_text("utf-8") == render(), (
        "docs/config.md is out of date with streams/config.py / detectors/params.py: "
        f"regenerate it with `{REGENERATE}` and commit it"
    )


def test_the_command_prints_the_reference() -> None:
    result = CliRunner().invoke(cli, ["config", "reference"])
    assert result.exit_code == 0, result.output
    assert result.output == render()


def rows(text: str) -> dict[str, list[str]]:
    """``section.key`` -> the cells of its table row."""
    out: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif section and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[f"{section}.{cells[0].strip('`')}"] = cells
    return out


def test_every_key_has_a_row_with_its_default_range_choices_and_env_var() -> None:
    table = rows(render())
    keys = [f"{s}.{k}" for s, model in SECTIONS.items() for k in model.model_fields]
    assert sorted(table) == sorted(keys)
    for dotted in keys:
        section, key = dotted.split(".")
        assert table[dotted][5] == f"`{env_var(section, key)}`"
        assert table[dotted][4] == (SECTIONS[section].model_fields[key].description or "").replace("|", "\\|")
    assert table["co_action.pair_window_s"][1:4] == ["float", "`30.0`", "> 0"]
    assert table["burst.cms_epsilon"][3] == "> 0, < 1"
    assert table["kafka.web_port"][3] == ">= 0, <= 65535"
    assert table["kafka.security_protocol"][3] == "one of `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`"
    assert table["kafka.sasl_mechanism"][1:3] == ["string, optional", "unset"]
    assert table["burst.key_kinds"][2] == '`["hashtag", "url", "object"]`'
    assert table["burst.key_kinds"][3].startswith("at least 1 item; each one of `hashtag`")
    assert table["co_action.enabled"][3] == "`true`, `false`"
    assert env_var("co_action", "pair_window_s") == "COORDWATCH_CO_ACTION__PAIR_WINDOW_S"
