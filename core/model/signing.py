"""HMAC-SHA256 signatures of model artifacts, keyed by secrets kept outside PostgreSQL.

A version's signature covers what a loader trusts about it: the artifact's sha256, the model name, the
version, the task and the feature refs. Whoever can write `tandem.model_versions` but does not hold a key can
neither sign new bytes nor move a signed artifact to another model or version. Keys come from
`TANDEM_MODEL_SIGNING_KEY`, comma-separated: the first signs, every one verifies (rotation: add the new key
first, re-sign with `tandem models sign --all`, then drop the old one), or from the file
`TANDEM_MODEL_SIGNING_KEY_FILE` names, or from the key `tandem up` (or `tandem demo`) generated under
`TANDEM_HOME` (`.tandem/`) for the embedded stack. No key: a pickle cannot be verified, so loading refuses
it (one line saying why) unless `TANDEM_ALLOW_UNSIGNED_MODELS=true` opts out, which logs a warning once per
process. See docs/security.md.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, replace

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import ConfigurationError, TamperedArtifactError, UnverifiedArtifactError
from core.records.tables import ModelVersion
from core.settings import Settings

__all__ = [
    "MIN_KEY_CHARS",
    "SIGNATURE_SCHEME",
    "ArtifactClaims",
    "SigningKeys",
    "artifact_sha256",
    "configured_keys",
    "new_version_signature",
    "row_claims",
    "sign_versions",
    "unsigned_refusal",
    "verified_sha256",
    "warn_unsigned",
]

logger = logging.getLogger(__name__)

SIGNATURE_SCHEME = "hmac-sha256"
MIN_KEY_CHARS = 32
_DOMAIN = b"tandem.model-artifact.v1\n"  # a signature of anything else never verifies as an artifact's


@dataclass(frozen=True, slots=True)
class ArtifactClaims:
    """What a signature vouches for: these bytes (by sha256) are this version of this model, reading these."""

    artifact_sha256: str
    model_name: str
    version: str
    task: str
    feature_refs: tuple[str, ...]

    def message(self) -> bytes:
        """The canonical bytes that are signed (domain tag + sorted, compact JSON)."""
        body = {
            "artifact_sha256": self.artifact_sha256,
            "feature_refs": list(self.feature_refs),
            "model_name": self.model_name,
            "task": self.task,
            "version": self.version,
        }
        return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _key_id(key: bytes) -> str:
    """8 hex naming a key in signatures (an HMAC of a constant: says nothing about the key itself)."""
    return hmac.new(key, b"tandem.key-id", hashlib.sha256).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The configured keys, the first of which signs. Empty: nothing can be signed or verified, so unsigned
    artifacts are refused unless `allow_unsigned` (TANDEM_ALLOW_UNSIGNED_MODELS) opts out."""

    keys: tuple[bytes, ...] = ()
    allow_unsigned: bool = False

    @classmethod
    def parse(cls, secret: SecretStr | str | None) -> SigningKeys:
        """Keys from `a,b,c` (whitespace around each ignored); ConfigurationError, in one line, on a bad entry."""
        raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if raw is None or not raw.strip():
            return cls()
        entries = [entry.strip() for entry in raw.split(",")]
        for position, entry in enumerate(entries, start=1):
            if len(entry) < MIN_KEY_CHARS:
                raise ConfigurationError(
                    f"TANDEM_MODEL_SIGNING_KEY entry {position} of {len(entries)} has {len(entry)} characters, "
                    f"needs at least {MIN_KEY_CHARS} "
                    '(generate one: python -c "import secrets; print(secrets.token_urlsafe(32))")'
                )
        return cls(tuple(entry.encode() for entry in entries))

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningKeys:
        """The configured keys: TANDEM_MODEL_SIGNING_KEY, else the file TANDEM_MODEL_SIGNING_KEY_FILE names,
        else the key `tandem up` generated under TANDEM_HOME (if any); and the unsigned opt-out."""
        allow = settings.allow_unsigned_models
        if settings.model_signing_key is not None and settings.model_signing_key.get_secret_value().strip():
            return replace(cls.parse(settings.model_signing_key), allow_unsigned=allow)
        path = settings.model_signing_key_file
        if path is None and settings.local_signing_key_path.is_file():
            path = settings.local_signing_key_path
        if path is None:
            return cls(allow_unsigned=allow)
        try:
            text = path.expanduser().read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"TANDEM_MODEL_SIGNING_KEY_FILE {path} cannot be read: {exc.strerror or exc}"
            ) from None
        keys = cls.parse(text)
        if not keys.enabled:
            raise ConfigurationError(f"the model signing key file {path} is empty")
        return replace(keys, allow_unsigned=allow)

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured: artifacts are signed and must verify."""
        return bool(self.keys)

    @property
    def signing_key_id(self) -> str:
        """The id of the key that signs (the first)."""
        if not self.keys:
            raise ConfigurationError("no model signing key is configured (TANDEM_MODEL_SIGNING_KEY)")
        return _key_id(self.keys[0])

    def sign(self, claims: ArtifactClaims) -> str:
        """`hmac-sha256:<key id>:<64 hex>` over the claims, with the first key."""
        if not self.keys:
            raise ConfigurationError("no model signing key is configured (TANDEM_MODEL_SIGNING_KEY)")
        key = self.keys[0]
        digest = hmac.new(key, claims.message(), hashlib.sha256).hexdigest()
        return f"{SIGNATURE_SCHEME}:{_key_id(key)}:{digest}"

    def verifying_key_id(self, signature: str | None, claims: ArtifactClaims) -> str | None:
        """The id of the configured key that made `signature` over `claims`, or None if none did.

        Every key is tried and compared in constant time (the key id in the signature is not trusted).
        """
        if not signature:
            return None
        scheme, _, rest = signature.partition(":")
        _, _, digest = rest.partition(":")
        if scheme != SIGNATURE_SCHEME:
            return None
        message = claims.message()
        found: str | None = None
        for key in self.keys:
            expected = hmac.new(key, message, hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected.encode(), digest.encode()):
                found = found or _key_id(key)
        return found

    def verify(self, signature: str | None, claims: ArtifactClaims) -> bool:
        """True when one of the keys made `signature` over exactly these claims."""
        return self.verifying_key_id(signature, claims) is not None


def configured_keys(keys: SigningKeys | None = None) -> SigningKeys:
    """`keys`, or when None those of the environment's settings (`TANDEM_MODEL_SIGNING_KEY`)."""
    return keys if keys is not None else SigningKeys.from_settings(Settings())


@functools.cache
def _warn_once() -> None:
    logger.warning(
        "model artifacts are unsigned: no TANDEM_MODEL_SIGNING_KEY is set and TANDEM_ALLOW_UNSIGNED_MODELS "
        "is true, so anyone who can write tandem.model_versions can run code in every process that loads a "
        "model (docs/security.md)"
    )


def warn_unsigned() -> None:
    """Log, once per process, that artifacts are neither signed nor verified (the explicit opt-out)."""
    _warn_once()


def unsigned_refusal(what: str, *, refusing: str = "load") -> str:
    """The one line that refuses to `refusing` (load, register) `what`: no key is configured to verify it."""
    return (
        f"{what} cannot be verified: no model signing key is configured (TANDEM_MODEL_SIGNING_KEY or "
        "TANDEM_MODEL_SIGNING_KEY_FILE; `tandem up` generates one for the embedded stack), and unpickling "
        f"unverified bytes from the database runs whatever code they hold: refusing to {refusing} it "
        "(TANDEM_ALLOW_UNSIGNED_MODELS=true accepts that risk; docs/security.md)"
    )


def artifact_sha256(artifact: bytes) -> str:
    """The artifact's sha256, hex."""
    return hashlib.sha256(artifact).hexdigest()


def new_version_signature(keys: SigningKeys, claims: ArtifactClaims) -> str | None:
    """The signature of a version being registered; None (with the opt-out) or UnverifiedArtifactError when
    no key is configured."""
    if keys.enabled:
        return keys.sign(claims)
    if not keys.allow_unsigned:  # a version no process could load: refuse it now, not at every load
        what = f"a new version of model {claims.model_name!r}"
        raise UnverifiedArtifactError(unsigned_refusal(what, refusing="register"))
    warn_unsigned()
    return None


def row_claims(row: ModelVersion, *, sha256: str) -> ArtifactClaims:
    """What a stored version's signature covers, with the artifact's actual sha256."""
    return ArtifactClaims(sha256, row.model_name, row.version, row.task, tuple(row.feature_refs))


def verified_sha256(row: ModelVersion, keys: SigningKeys) -> str:
    """The artifact's sha256, once it matches the recorded one and (with keys) the signature verifies."""
    what = f"artifact of model {row.model_name!r} version {row.version}"
    actual = artifact_sha256(row.artifact)
    if not hmac.compare_digest(actual.encode(), row.artifact_sha256.encode()):  # bytes: any text compares
        raise TamperedArtifactError(
            f"{what} does not match its recorded hash "
            f"(recorded sha256 {row.artifact_sha256[:12]}..., computed {actual[:12]}...): refusing to load it"
        )
    if not keys.enabled:
        if not keys.allow_unsigned:
            raise UnverifiedArtifactError(unsigned_refusal(what))
        warn_unsigned()
    elif row.artifact_signature is None:
        raise TamperedArtifactError(
            f"{what} is unsigned while TANDEM_MODEL_SIGNING_KEY is set: refusing to load it "
            "(if you trust it: `tandem models sign --all --adopt-unsigned`)"
        )
    elif not keys.verify(row.artifact_signature, row_claims(row, sha256=actual)):
        raise TamperedArtifactError(
            f"{what} has a signature that no configured TANDEM_MODEL_SIGNING_KEY made over its bytes and "
            "metadata: refusing to load it"
        )
    return actual


def sign_versions(
    session: Session, *, keys: SigningKeys, model_name: str | None = None, adopt_unsigned: bool = False
) -> dict[str, list[str]]:
    """(Re-)sign stored versions with the first of `keys`, never unpickling them; returns versions by outcome.

    `signed`: verified by another configured key (rotation) or, with `adopt_unsigned`, unsigned until now
    (the caller vouches for them). `current`: already signed by the first key. `refused`: a wrong signature,
    a hash mismatch, or unsigned without `adopt_unsigned`. Each outcome lists versions by model, newest first.
    """
    if not keys.enabled:
        raise ConfigurationError("set TANDEM_MODEL_SIGNING_KEY to sign model versions")
    query = select(ModelVersion).execution_options(populate_existing=True)
    if model_name is not None:
        query = query.where(ModelVersion.model_name == model_name)
    outcome: dict[str, list[str]] = {"signed": [], "current": [], "refused": []}
    for row in session.scalars(query.order_by(ModelVersion.model_name, ModelVersion.created_at.desc())):
        actual = artifact_sha256(row.artifact)
        claims = row_claims(row, sha256=actual)
        signer = keys.verifying_key_id(row.artifact_signature, claims)
        if not hmac.compare_digest(actual.encode(), row.artifact_sha256.encode()) or (
            signer is None and (row.artifact_signature is not None or not adopt_unsigned)
        ):
            outcome["refused"].append(row.version)
        elif signer == keys.signing_key_id:
            outcome["current"].append(row.version)
        else:
            row.artifact_signature = keys.sign(claims)
            outcome["signed"].append(row.version)
    session.flush()
    return outcome
