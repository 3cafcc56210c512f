from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from datagate.errors import ConfigError
from datagate.rules import RULES
from datagate.rules.human import MinHuman
from datagate.rules.policy import default_rules_path, load_policy, parse_policy, with_overrides

from .conftest import ROOT

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "policy_cases.yaml").read_text()
)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_policy_case(case: dict[str, Any]) -> None:
    if "ok" in case:
        assert len(parse_policy(case["text"], "rules.yaml").rules) == case["ok"]
        return
    with pytest.raises(ConfigError) as info:
        parse_policy(case["text"], "rules.yaml")
    known = ", ".join(sorted(RULES))
    assert str(info.value) == case["error"].strip().replace("{rules}", known)


@pytest.mark.parametrize(
    "path", [*sorted((ROOT / "rules").glob("*.yaml")), ROOT / "examples" / "trusted-sources.yaml"]
)
def test_shipped_policies_validate(path: Path) -> None:
    assert load_policy(path).rules


def test_packaged_default_is_the_rules_folder_default() -> None:
    packaged = Path(__file__).resolve().parent.parent / "datagate" / "policies" / "default.yaml"
    assert packaged.read_bytes() == (ROOT / "rules" / "default.yaml").read_bytes()


def test_default_rules_path_prefers_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_rules_path().name == "default.yaml" and default_rules_path().is_file()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "default.yaml").write_text("rules: []\n")
    assert default_rules_path() == Path("rules/default.yaml")


def test_overrides_set_or_add_rules() -> None:
    base = parse_policy("rules:\n  - rule: decodable\n", "x")
    added = with_overrides(base, min_human=0.8)
    (rule,) = [r for r in added.rules if isinstance(r, MinHuman)]
    assert rule.min == 0.8 and rule.unknown == "not_human"
    changed = with_overrides(with_overrides(base, min_human=0.8), min_human=0.3)
    assert [r.min for r in changed.rules if isinstance(r, MinHuman)] == [0.3]
    with pytest.raises(
        ConfigError, match=r"--max-rejected-fraction: expected a number in \[0, 1\], got -0.1"
    ):
        with_overrides(base, max_rejected_fraction=-0.1)


BILLION_LAUGHS = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    + "rules:\n  - rule: formats\n    allow: *i\n"
)


def test_rules_validate_refuses_a_billion_laughs_quickly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from time import perf_counter

    from datagate.cli import main

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)  # 10**9 strings once its aliases are expanded
    started = perf_counter()
    assert main(["rules", "validate", str(bomb)]) == 2
    assert perf_counter() - started < 5
    err = capsys.readouterr().err.replace("\n", "")
    assert f"{bomb}:2:8: invalid YAML: aliases (*a) are not allowed" in err
    assert len(err) < 500


def test_enforce_refuses_a_billion_laughs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datagate.cli import main

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    assert main(["enforce", str(tmp_path / "no-scan"), "--rules", str(bomb)]) == 2
    assert "aliases (*a) are not allowed" in capsys.readouterr().err


def test_rules_file_that_is_not_utf8_is_exit_2_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datagate.cli import main

    latin1 = tmp_path / "rules.yaml"
    latin1.write_bytes("# café policy\nrules:\n  - rule: decodable\n".encode("latin-1"))
    assert main(["rules", "validate", str(latin1)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert f"{latin1}:1:6: not UTF-8 text (byte 0xe9); save the rules file as UTF-8" in err


def test_rules_validate_counts_in_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datagate.cli import main

    one = tmp_path / "one.yaml"
    one.write_text("rules:\n  - rule: decodable\n")
    assert main(["rules", "validate", str(one)]) == 0
    assert capsys.readouterr().out.replace("\n", "").endswith(": 1 rule")
