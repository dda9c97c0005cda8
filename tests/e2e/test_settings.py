"""The example's settings: bad environment values stop it with one line naming
the variable, under uvicorn too; the dev seed's answer window is long enough to
answer by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples.fastapi_app.settings import ENV, Settings, SettingsError
from extension_fsm import TimeoutAction

SECRET = "s" * 40
ROOT = Path(__file__).resolve().parents[2]


def _env(**values: str) -> dict[str, str]:
    return {"EXTENSION_FSM_JWT_SECRET": SECRET, **values}


def test_defaults_from_an_environment_holding_only_the_secret() -> None:
    s = Settings.from_env(_env())
    assert (s.timeout_seconds, s.timeout_action, s.grace_seconds) == (10, "auto_approve", 60)
    assert s.database_url == "sqlite://" and s.redis_url is None and not s.dev_seed
    assert s.health_max_lag == 30.0


def test_values_are_read_and_converted() -> None:
    s = Settings.from_env(
        _env(
            EXTENSION_FSM_TIMEOUT_SECONDS="25",
            EXTENSION_FSM_GRACE_SECONDS="0",
            EXTENSION_FSM_HEALTH_MAX_LAG="12.5",
            EXTENSION_FSM_DEV_SEED="1",
            EXTENSION_FSM_REDIS_URL="redis://127.0.0.1:6379/0",
        )
    )
    assert (s.timeout_seconds, s.grace_seconds, s.health_max_lag) == (25, 0, 12.5)
    assert s.dev_seed and s.redis_url == "redis://127.0.0.1:6379/0"


def test_the_multi_instance_settings_are_read() -> None:
    s = Settings.from_env(
        _env(
            EXTENSION_FSM_SWEEP="false",
            EXTENSION_FSM_SWEEP_INTERVAL="0.5",
            EXTENSION_FSM_PRESENCE_TTL="12",
            EXTENSION_FSM_SOCKET_TTL="20",
            EXTENSION_FSM_TOKEN_CHECK_SECONDS="2",
        )
    )
    assert not s.sweep and s.sweep_interval == 0.5
    assert (s.presence_ttl, s.socket_ttl, s.token_check_seconds) == (12.0, 20.0, 2.0)


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("EXTENSION_FSM_TIMEOUT_SECONDS", "ten", "valid integer"),
        ("EXTENSION_FSM_TIMEOUT_SECONDS", "-5", "greater than 0"),
        ("EXTENSION_FSM_TIMEOUT_SECONDS", "0", "greater than 0"),
        ("EXTENSION_FSM_TIMEOUT_SECONDS", "2.5", "valid integer"),
        ("EXTENSION_FSM_GRACE_SECONDS", "-1", "greater than or equal to 0"),
        ("EXTENSION_FSM_GRACE_SECONDS", "1e3", "valid integer"),
        ("EXTENSION_FSM_HEALTH_MAX_LAG", "soon", "valid number"),
        ("EXTENSION_FSM_HEALTH_MAX_LAG", "-3", "greater than 0"),
        ("EXTENSION_FSM_DEV_SEED", "perhaps", "valid boolean"),
        ("EXTENSION_FSM_SWEEP", "sometimes", "valid boolean"),
        ("EXTENSION_FSM_SWEEP_INTERVAL", "0", "greater than 0"),
        ("EXTENSION_FSM_PRESENCE_TTL", "-1", "greater than 0"),
        ("EXTENSION_FSM_SOCKET_TTL", "0", "greater than 0"),
        ("EXTENSION_FSM_TOKEN_CHECK_SECONDS", "0", "greater than 0"),
        ("EXTENSION_FSM_TOKEN_CHECK_SECONDS", "301", "less than or equal to 300"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(var: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(_env(**{var: value}))
    text = str(caught.value)
    assert text.startswith(f"{var}={value!r}: ")
    assert says in text
    assert "\n" not in text


@pytest.mark.parametrize("secret", [None, ""])
def test_a_missing_or_empty_secret_is_refused(secret: str | None) -> None:
    env = {} if secret is None else {"EXTENSION_FSM_JWT_SECRET": secret}
    with pytest.raises(SettingsError, match=r"^EXTENSION_FSM_JWT_SECRET is not set"):
        Settings.from_env(env)


def test_a_short_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"EXTENSION_FSM_JWT_SECRET": "short-secret"})
    text = str(caught.value)
    assert text.startswith("EXTENSION_FSM_JWT_SECRET=(hidden): must be at least 32 bytes")
    assert "short-secret" not in text


def test_an_unknown_timeout_action_is_allowed_it_means_auto_approve() -> None:
    s = Settings.from_env(_env(EXTENSION_FSM_TIMEOUT_ACTION="auto_maybe"))
    assert s.timeout_action == "auto_maybe"
    assert TimeoutAction.parse(s.timeout_action) is TimeoutAction.AUTO_APPROVE


def test_an_empty_variable_takes_the_default() -> None:
    s = Settings.from_env(_env(EXTENSION_FSM_TIMEOUT_SECONDS="", EXTENSION_FSM_REDIS_URL=""))
    assert s.timeout_seconds == 10 and s.redis_url is None


def test_settings_are_frozen_and_refuse_unknown_fields() -> None:
    s = Settings.from_env(_env())
    with pytest.raises(ValueError):
        s.timeout_seconds = 5  # type: ignore[misc]
    with pytest.raises(SettingsError, match=r"^timeout_secs="):
        Settings.validated({"jwt_secret": SECRET, "timeout_secs": 5})


def test_every_setting_read_from_the_environment_is_a_field() -> None:
    assert set(ENV) <= set(Settings.model_fields)


def test_the_dev_answer_window_is_60_seconds_unless_set() -> None:
    env = {"EXTENSION_FSM_JWT_SECRET": SECRET, "EXTENSION_FSM_DEV_SEED": "1"}
    assert Settings.from_env(env).timeout_seconds == 60
    assert Settings.from_env({**env, "EXTENSION_FSM_TIMEOUT_SECONDS": "15"}).timeout_seconds == 15
    assert Settings.from_env({"EXTENSION_FSM_JWT_SECRET": SECRET}).timeout_seconds == 10


def test_a_bad_setting_stops_uvicorn_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EXTENSION_FSM_JWT_SECRET": SECRET,
        "EXTENSION_FSM_TIMEOUT_SECONDS": "ten",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors[0] == (
        "ERROR:    EXTENSION_FSM_TIMEOUT_SECONDS='ten': Input should be a valid integer, "
        "unable to parse string as an integer"
    )
