"""Bearer tokens of the API: JWTs that name the caller's account and user.

Every API call except the health checks carries ``Authorization: Bearer <JWT>``. The token is
signed with HS256 (a shared secret) or RS256 (verified with a public key) and carries
``account_id`` (the tenant every read and write is scoped to), ``sub`` (the user, recorded as
created_by / updated_by) and ``exp``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import RSAAlgorithm

from goalworker.errors import AuthNotConfigured, InvalidToken
from goalworker.settings import Settings

log = logging.getLogger(__name__)

#: Shortest HS256 secret accepted, in bytes (RFC 7518 asks for at least the hash size).
MIN_SECRET_BYTES = 32
#: Longest account or user id a token may carry, in characters (ids are stored as text).
MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: the account every read and write is scoped to, and the user who acts."""

    account_id: str
    user_id: str


def _secret(settings: Settings) -> str:
    secret = settings.jwt_secret.get_secret_value()
    if not secret:
        raise AuthNotConfigured(
            "GOALWORKER_JWT_SECRET is not set: HS256 tokens need a shared secret of at least "
            f"{MIN_SECRET_BYTES} bytes (for example `openssl rand -hex 32`)"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise AuthNotConfigured(
            f"GOALWORKER_JWT_SECRET has {len(secret.encode())} bytes; HS256 needs at least "
            f"{MIN_SECRET_BYTES}"
        )
    return secret


def _pem(value: str, setting: str) -> str:
    """PEM text given inline or as the path of a file holding it."""
    if not value:
        raise AuthNotConfigured(f"{setting} is not set: RS256 needs a PEM key or its file path")
    if value.lstrip().startswith("-----BEGIN"):
        return value
    path = Path(value)
    if not path.is_file():
        raise AuthNotConfigured(f"{setting} is neither PEM text nor a readable file: {value!r}")
    return path.read_text()


class TokenVerifier:
    """Checks bearer tokens against the configured key; built once when the API starts."""

    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.audience = settings.jwt_audience or None
        key: Any
        if self.algorithm == "HS256":
            key = _secret(settings)
        else:
            pem = _pem(settings.jwt_public_key, "GOALWORKER_JWT_PUBLIC_KEY")
            try:
                key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem)
            except (ValueError, jwt.InvalidKeyError) as exc:
                raise AuthNotConfigured(
                    f"GOALWORKER_JWT_PUBLIC_KEY is not a usable RSA public key: {exc}"
                ) from exc
        self._key = key

    def verify(self, token: str) -> Principal:
        """The principal a valid token names; :class:`InvalidToken` otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                # One algorithm only: a token cannot choose how it is checked.
                algorithms=[self.algorithm],
                audience=self.audience,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired; get a new one") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the token's signature does not verify") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken(f"the token is not signed with {self.algorithm}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token's audience ('aud') is not this API's") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"the token is not a valid JWT: {exc}") from None
        return Principal(
            account_id=_id_claim(claims, "account_id"), user_id=_id_claim(claims, "sub")
        )


def _id_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidToken(f"the token's {name!r} claim must be a non-empty string")
    if len(value) > MAX_ID_LENGTH or "\x00" in value or not _encodable(value):
        raise InvalidToken(
            f"the token's {name!r} claim must be valid text of at most {MAX_ID_LENGTH} "
            "characters, without NUL"
        )
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def mint_token(
    settings: Settings,
    account_id: str,
    user_id: str,
    ttl_seconds: int = 3600,
    private_key: str | None = None,
) -> str:
    """A signed token for ``user_id`` of ``account_id`` that expires in ``ttl_seconds``.

    HS256 signs with the configured secret; RS256 needs ``private_key`` (PEM text or path).
    """
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "account_id": account_id,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    key: Any
    if settings.jwt_algorithm == "HS256":
        key = _secret(settings)
    else:
        key = _pem(private_key or "", "--private-key")
    return jwt.encode(claims, key, algorithm=settings.jwt_algorithm)
