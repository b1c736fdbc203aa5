"""Model artifact signatures without I/O: key parsing, sign/verify, rotation, and what a signature binds."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.errors import ConfigurationError
from core.model import signing
from core.model.signing import (
    MIN_KEY_CHARS,
    ArtifactClaims,
    SigningKeys,
    configured_keys,
    unsigned_refusal,
    warn_unsigned,
)
from core.settings import Settings

OLD = "o" * 40
NEW = "n" * 40
CLAIMS = ArtifactClaims(
    artifact_sha256=hashlib.sha256(b"artifact").hexdigest(),
    model_name="risk",
    version="20261202T060000Z-0123abcd",
    task="classification",
    feature_refs=("view:a", "view:b"),
)


def test_no_key_or_blank_means_signing_is_off() -> None:
    """Unset, empty or blank settings give no keys: signing disabled, and sign() refuses in one line."""
    for secret in (None, "", "  ", SecretStr(" ")):
        keys = SigningKeys.parse(secret)
        assert not keys.enabled
        assert keys.keys == ()
    with pytest.raises(ConfigurationError, match="TANDEM_MODEL_SIGNING_KEY"):
        SigningKeys().sign(CLAIMS)


def test_comma_separated_keys_first_signs_and_whitespace_is_ignored() -> None:
    """`new, old` parses to two keys in order; the signature is made with the first."""
    keys = SigningKeys.parse(SecretStr(f" {NEW} , {OLD}\n"))
    assert keys.keys == (NEW.encode(), OLD.encode())
    signature = keys.sign(CLAIMS)
    assert signature == SigningKeys.parse(NEW).sign(CLAIMS)
    assert signature != SigningKeys.parse(OLD).sign(CLAIMS)


@pytest.mark.parametrize("raw", ["short", f"{NEW},", f"{NEW},,{OLD}", f"{NEW},{'x' * (MIN_KEY_CHARS - 1)}"])
def test_short_or_empty_entries_are_a_configuration_error_naming_the_entry(raw: str) -> None:
    """A key under MIN_KEY_CHARS characters (or an empty entry) is refused in one line naming its position."""
    with pytest.raises(ConfigurationError, match=r"entry \d+ of \d+") as raised:
        SigningKeys.parse(raw)
    assert "\n" not in str(raised.value)
    assert NEW not in str(raised.value)  # the message never echoes a key


def test_signature_format_is_scheme_key_id_and_hmac_sha256_of_the_claims() -> None:
    """`hmac-sha256:<8 hex key id>:<HMAC-SHA256 hex of the canonical claims>`, recomputable with hmac."""
    keys = SigningKeys.parse(NEW)
    scheme, key_id, digest = keys.sign(CLAIMS).split(":")
    assert scheme == "hmac-sha256"
    assert key_id == keys.signing_key_id
    assert len(key_id) == 8
    assert digest == hmac.new(NEW.encode(), CLAIMS.message(), hashlib.sha256).hexdigest()
    assert CLAIMS.message().startswith(b"tandem.model-artifact.v1\n")


def test_signature_verifies_with_its_key_and_not_with_another() -> None:
    """A signature verifies under the key that made it and fails under any other key."""
    signature = SigningKeys.parse(OLD).sign(CLAIMS)
    assert SigningKeys.parse(OLD).verify(signature, CLAIMS)
    assert not SigningKeys.parse(NEW).verify(signature, CLAIMS)


def test_rotation_every_configured_key_verifies() -> None:
    """With `new,old` configured, a version signed by the old key still verifies, and names the old key."""
    old_signature = SigningKeys.parse(OLD).sign(CLAIMS)
    rotated = SigningKeys.parse(f"{NEW},{OLD}")
    assert rotated.verify(old_signature, CLAIMS)
    assert rotated.verifying_key_id(old_signature, CLAIMS) == SigningKeys.parse(OLD).signing_key_id
    assert rotated.verifying_key_id(rotated.sign(CLAIMS), CLAIMS) == rotated.signing_key_id


@pytest.mark.parametrize(
    "change",
    [
        {"artifact_sha256": hashlib.sha256(b"other bytes").hexdigest()},
        {"model_name": "other"},
        {"version": "20261202T060000Z-0123abcd-2"},
        {"task": "regression"},
        {"feature_refs": ("view:b", "view:a")},
        {"feature_refs": ("view:a",)},
    ],
)
def test_a_signature_binds_bytes_model_version_task_and_inputs(change: dict[str, object]) -> None:
    """Changing any claim (other bytes, moving a signed artifact to another model/version, other inputs) fails."""
    keys = SigningKeys.parse(NEW)
    signature = keys.sign(CLAIMS)
    assert not keys.verify(signature, dataclasses.replace(CLAIMS, **change))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "signature",
    [None, "", "hmac-sha256", "hmac-sha256:zz", "md5:abcd:" + "0" * 64, "hmac-sha256:00000000:" + "0" * 64],
)
def test_missing_or_malformed_signatures_never_verify(signature: str | None) -> None:
    """No signature, another scheme, a truncated or forged value: verify is False, never an exception."""
    assert not SigningKeys.parse(NEW).verify(signature, CLAIMS)


def test_the_key_id_in_a_signature_is_not_trusted() -> None:
    """A digest made by the old key but labelled with the new key's id still names the old key (all are tried)."""
    rotated = SigningKeys.parse(f"{NEW},{OLD}")
    digest = SigningKeys.parse(OLD).sign(CLAIMS).rsplit(":", 1)[1]
    relabelled = f"hmac-sha256:{rotated.signing_key_id}:{digest}"
    assert rotated.verifying_key_id(relabelled, CLAIMS) == SigningKeys.parse(OLD).signing_key_id


def test_configured_keys_reads_the_environment_when_none_are_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    """configured_keys(None) follows TANDEM_MODEL_SIGNING_KEY; explicit keys win over the environment."""
    monkeypatch.setenv("TANDEM_MODEL_SIGNING_KEY", f"{NEW},{OLD}")
    assert configured_keys().keys == (NEW.encode(), OLD.encode())
    assert configured_keys(SigningKeys()).keys == ()
    assert SigningKeys.from_settings(Settings(model_signing_key=SecretStr(OLD))).keys == (OLD.encode(),)
    assert OLD not in repr(Settings(model_signing_key=SecretStr(OLD)))  # a secret: masked


def test_unsigned_warning_is_logged_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    """warn_unsigned logs one WARNING naming the setting, however often it is called."""
    signing._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="core.model.signing"):
        for _ in range(3):
            warn_unsigned()
    warnings = [record for record in caplog.records if record.name == "core.model.signing"]
    assert len(warnings) == 1
    assert "TANDEM_MODEL_SIGNING_KEY" in warnings[0].getMessage()


def test_the_opt_out_comes_from_settings_and_the_refusal_is_one_line(tmp_path: Path) -> None:
    """TANDEM_ALLOW_UNSIGNED_MODELS sets allow_unsigned (with or without a key); the refusal names the fixes."""
    keyless = SigningKeys.from_settings(Settings(home=tmp_path, model_signing_key=None))
    assert (keyless.enabled, keyless.allow_unsigned) == (False, False)
    opted = SigningKeys.from_settings(
        Settings(home=tmp_path, model_signing_key=None, allow_unsigned_models=True)
    )
    assert (opted.enabled, opted.allow_unsigned) == (False, True)
    line = unsigned_refusal("artifact of model 'risk' version v1")
    assert "\n" not in line
    for needle in (
        "TANDEM_MODEL_SIGNING_KEY",
        "tandem up",
        "TANDEM_ALLOW_UNSIGNED_MODELS=true",
        "refusing to load",
    ):
        assert needle in line
