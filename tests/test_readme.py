"""The README keeps its promises: the two commands, and every setting the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from services.shared import settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_two_commands_come_first() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_ci_runs_the_readme_test_command() -> None:
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_every_setting_is_documented_as_the_code_has_it() -> None:
    assert settings.markdown_table() in README, "run `python -m services.shared.settings` and paste the table"
