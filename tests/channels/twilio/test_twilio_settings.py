"""The [twilio] section: validation, and a half-configured channel named by its missing key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from twilio_support import ACCOUNT_SID, AUTH_TOKEN, twilio_settings

from channels.twilio.settings import TWILIO_API, TwilioSettings
from knowledge.settings import ConfigError


def test_defaults_are_off_and_valid():
    settings = TwilioSettings()
    assert not settings.enabled and settings.api_base_url == TWILIO_API
    assert settings.voice_language == "de-DE" and isinstance(settings.speech_timeout_seconds, int)
    assert settings.transfer_target is None
    for name, field in TwilioSettings.model_fields.items():
        assert field.description and len(field.description) > 20, name
    assert "auth_token" not in repr(twilio_settings())  # the secret never shows in a repr


def test_a_channel_that_is_on_needs_token_and_public_url():
    assert twilio_settings().require().enabled
    with pytest.raises(ConfigError, match=r"auth_token.*CITIZEN_HUB_TWILIO__AUTH_TOKEN"):
        twilio_settings(auth_token="").require()
    with pytest.raises(ConfigError, match="public_url"):
        twilio_settings(public_url="").require()
    with pytest.raises(ConfigError, match="phone_numbers and messaging_service_sid"):
        twilio_settings(phone_numbers=[]).require_sender()
    with pytest.raises(ConfigError, match="off"):
        TwilioSettings().require()


@pytest.mark.parametrize("key,value", [
    ("account_sid", "AC123"), ("account_sid", "SK" + "0" * 32), ("messaging_service_sid", "MG1"),
    ("public_url", "hub.example.de"), ("public_url", "https://hub.example.de/?x=1"), ("api_base_url", ""),
    ("phone_numbers", ["12345"]), ("voice_language", "de"), ("speech_timeout_seconds", 0),
    ("agent_queue", "<queue>"), ("agent_number", "abc"), ("unknown_key", 1),
])
def test_bad_values_are_refused(key, value):
    with pytest.raises(ValidationError):
        TwilioSettings(**{key: value})


def test_normalisation():
    settings = TwilioSettings(account_sid=ACCOUNT_SID, auth_token=f" {AUTH_TOKEN} ",
                              public_url="https://hub.example.de/buerger/", phone_numbers="+49 322 21803115, 032221803115",
                              agent_number="04551 951-0", agent_queue="buergertelefon")
    assert settings.public_url == "https://hub.example.de/buerger" and settings.auth_token == AUTH_TOKEN
    assert settings.phone_numbers == ["+4932221803115"]
    assert settings.agent_number == "+4945519510" and settings.transfer_target == ("queue", "buergertelefon")
    assert TwilioSettings(agent_number="+4945519510").transfer_target == ("number", "+4945519510")


def test_citizen_hub_serve_stops_naming_the_missing_key(tmp_path, monkeypatch, capsys):
    from hub.cli import main

    monkeypatch.chdir(tmp_path)  # no config.toml here: defaults and the environment
    monkeypatch.setenv("CITIZEN_HUB_TWILIO__ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("CITIZEN_HUB_TWILIO__PUBLIC_URL", "https://hub.example.de")
    assert main(["serve", "--db", f"sqlite:///{tmp_path / 'hub.sqlite3'}", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "[twilio] account_sid is set but auth_token is empty" in err and "CITIZEN_HUB_TWILIO__AUTH_TOKEN" in err


def test_the_token_in_the_file_stops_the_start(tmp_path):
    """The token is a secret: written in config.toml it would end up in backups and version control."""
    from hub.config import load_settings

    path = tmp_path / "config.toml"
    path.write_text(f'[twilio]\naccount_sid = "{ACCOUNT_SID}"\nauth_token = "{AUTH_TOKEN}"\n'
                    'public_url = "https://hub.example.de"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twilio.auth_token must not be in the file.*CITIZEN_HUB_TWILIO__AUTH_TOKEN"):
        load_settings(path, environ={})
    path.write_text(f'[twilio]\naccount_sid = "{ACCOUNT_SID}"\nauth_token = ""\n', encoding="utf-8")
    settings = load_settings(path, environ={"CITIZEN_HUB_TWILIO__AUTH_TOKEN": AUTH_TOKEN})
    assert settings.twilio.auth_token == AUTH_TOKEN
