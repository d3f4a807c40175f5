"""The sms channel's keys, as the configuration loads them (moved from tests/test_channel_sms.py): in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broadcaster.core.errors import ConfigError
from broadcaster.settings import load_settings
from channels.sms import SmsConfig
from channels.sms.emulator import ACCOUNT_SID, FROM_NUMBER, RECIPIENTS


def write_sms_config(path: Path, **table: Any) -> Path:
    base = {
        "type": "sms",
        "account_sid": ACCOUNT_SID,
        "auth_token": "very-secret-token",
        "from_number": FROM_NUMBER,
        "recipients": list(RECIPIENTS),
    }
    lines = ["[channels.sms]"]
    for key, value in {**base, **table}.items():
        if value is None:
            continue
        rendered = "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else f'"{value}"'
        lines.append(f"{key} = {rendered}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"recipients": ["+14155550100", "+1555"]}, "channels.sms.recipients.1: '+1555' is not a valid E.164 phone number"),
        ({"recipients": ["+1 415 555 0100"]}, "channels.sms.recipients.0: '+1 415 555 0100' is not a valid E.164"),
        ({"from_number": "4155550100"}, "channels.sms.from_number: '4155550100' is not a valid E.164 phone number"),
        ({"account_sid": "AC123"}, "channels.sms.account_sid: must be 'AC' followed by 32"),
        ({"from_number": None}, "an sms channel needs from_number or messaging_service_sid"),
        ({"recipients": []}, "an sms channel needs at least one recipient"),
    ],
)  # fmt: skip
def test_bad_configuration_is_one_line_naming_the_key(tmp_path: Path, table: dict[str, Any], expected: str) -> None:
    path = write_sms_config(tmp_path / "broadcaster.toml", **table)

    with pytest.raises(ConfigError) as raised:
        load_settings(path)

    assert expected in str(raised.value)
    assert "very-secret-token" not in str(raised.value)


def test_good_configuration_loads_with_defaults(tmp_path: Path) -> None:
    """An audience alone is enough; the API root defaults to Twilio's."""
    path = write_sms_config(tmp_path / "broadcaster.toml", recipients=[], audience="subscribers")
    config = load_settings(path).channels["sms"]
    assert isinstance(config, SmsConfig)
    assert config.api_base_url == "https://api.twilio.com"
    assert config.audience == "subscribers"


@pytest.mark.parametrize(
    ("value", "shown"), [(0, "not 0"), (11, "not 11"), ("many", "not 'many'"), (2.5, "not 2.5"), (True, "not True")]
)
def test_max_segments_outside_1_to_10_is_a_configuration_error(tmp_path: Path, value: Any, shown: str) -> None:
    path = write_sms_config(tmp_path / "broadcaster.toml")
    path.write_text(path.read_text() + f"max_segments = {json.dumps(value)}\n")

    with pytest.raises(ConfigError) as raised:
        load_settings(path)

    assert "channels.sms.max_segments: must be a whole number from 1 to 10" in str(raised.value)
    assert shown in str(raised.value)
    assert "\n" not in str(raised.value)


def test_max_segments_defaults_to_3_and_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_sms_config(tmp_path / "broadcaster.toml")
    sms_config = load_settings(path).channels["sms"]
    assert isinstance(sms_config, SmsConfig) and sms_config.max_segments == 3

    monkeypatch.setenv("BROADCASTER_CHANNELS__SMS__MAX_SEGMENTS", "1")
    sms_config = load_settings(path).channels["sms"]
    assert isinstance(sms_config, SmsConfig) and sms_config.max_segments == 1
