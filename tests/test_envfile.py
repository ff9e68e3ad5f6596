"""project/envfile.py: var/.env, written by `make migrate` and loaded by manage.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from project import envfile


def test_write_once_with_the_development_settings_then_load_without_overriding(tmp_path: Path) -> None:
    environ = {"BATCHFETCH_VAR_DIR": str(tmp_path), "DJANGO_DEBUG": "1", "FETCH_ALLOW_PRIVATE_ADDRESSES": "1"}
    assert envfile.write(environ) == tmp_path / ".env"
    assert envfile.write({**environ, "DJANGO_DEBUG": "0"}) is None  # never rewritten: the user may have edited it
    assert envfile.parse((tmp_path / ".env").read_text()) == {"DJANGO_DEBUG": "1", "FETCH_ALLOW_PRIVATE_ADDRESSES": "1"}

    fresh = {"BATCHFETCH_VAR_DIR": str(tmp_path), "FETCH_ALLOW_PRIVATE_ADDRESSES": "0"}
    assert envfile.load(fresh) == tmp_path / ".env"
    assert fresh["DJANGO_DEBUG"] == "1"
    assert fresh["FETCH_ALLOW_PRIVATE_ADDRESSES"] == "0"  # the environment wins


def test_no_file_is_nothing_and_a_bad_line_is_named(tmp_path: Path) -> None:
    assert envfile.load({"BATCHFETCH_VAR_DIR": str(tmp_path)}) is None
    assert envfile.parse("# c\n\nexport A = 1\nB=\n") == {"A": "1", "B": ""}
    (tmp_path / ".env").write_text("A=1\nnot a setting\n")
    with pytest.raises(ImproperlyConfigured, match=r"\.env: line 2: expected KEY=VALUE"):
        envfile.load({"BATCHFETCH_VAR_DIR": str(tmp_path)})
