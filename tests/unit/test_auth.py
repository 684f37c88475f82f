"""Minting and verifying the API's bearer tokens, HS256 and RS256."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.utils import base64url_encode
from pydantic import SecretStr

from goalworker.auth import Principal, TokenVerifier, mint_token
from goalworker.errors import AuthNotConfigured, InvalidToken
from goalworker.settings import Settings

SECRET = "unit-test-secret-" + "abcdef0123456789" * 2


def hs256(**changes: object) -> Settings:
    return Settings(jwt_algorithm="HS256", jwt_secret=SecretStr(SECRET)).model_copy(update=changes)


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def test_a_minted_token_verifies_to_its_account_and_user():
    settings = hs256()

    token = mint_token(settings, "acct-1", "alice", ttl_seconds=60)

    assert TokenVerifier(settings).verify(token) == Principal(account_id="acct-1", user_id="alice")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 60


def test_an_expired_token_is_refused():
    settings = hs256()
    token = mint_token(settings, "acct-1", "alice", ttl_seconds=-1)

    with pytest.raises(InvalidToken, match="expired"):
        TokenVerifier(settings).verify(token)


def test_a_token_signed_with_another_secret_is_refused():
    forged = mint_token(hs256(jwt_secret=SecretStr("x" * 40)), "acct-1", "alice")

    with pytest.raises(InvalidToken, match="signature"):
        TokenVerifier(hs256()).verify(forged)


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({"sub": "alice", "account_id": "acct"}, "'exp'"),
        ({"account_id": "acct", "exp": 2**40}, "'sub'"),
        ({"sub": "alice", "exp": 2**40}, "'account_id'"),
        ({"sub": "alice", "account_id": "  ", "exp": 2**40}, "'account_id'"),
        ({"sub": "alice", "account_id": 7, "exp": 2**40}, "'account_id'"),
        ({"sub": "alice", "account_id": "a" * 300, "exp": 2**40}, "at most 256"),
        ({"sub": "alice\x00", "account_id": "acct", "exp": 2**40}, "without NUL"),
        ({"sub": "alice", "account_id": "\ud800", "exp": 2**40}, "valid text"),
    ],
)
def test_a_token_without_a_usable_claim_is_refused(claims: dict[str, object], reason: str):
    token = jwt.encode(claims, SECRET, algorithm="HS256")

    with pytest.raises(InvalidToken, match=reason):
        TokenVerifier(hs256()).verify(token)


def test_an_unsigned_token_is_refused():
    token = jwt.encode({"sub": "a", "account_id": "b", "exp": 2**40}, None, algorithm="none")

    with pytest.raises(InvalidToken, match="not signed with HS256"):
        TokenVerifier(hs256()).verify(token)


def test_the_audience_is_required_when_configured_and_refused_when_not():
    with_audience = hs256(jwt_audience="goalworker")
    token = mint_token(with_audience, "acct", "alice")

    assert TokenVerifier(with_audience).verify(token).account_id == "acct"
    with pytest.raises(InvalidToken, match="aud"):
        TokenVerifier(hs256()).verify(token)
    with pytest.raises(InvalidToken, match="aud"):
        TokenVerifier(with_audience).verify(mint_token(hs256(), "acct", "alice"))


def test_rs256_tokens_verify_with_the_public_key_given_inline_or_as_a_file(
    rsa_keys: tuple[str, str], tmp_path: Path
):
    private, public = rsa_keys
    key_file = tmp_path / "public.pem"
    key_file.write_text(public)
    inline = Settings(jwt_algorithm="RS256", jwt_public_key=public)
    from_file = Settings(jwt_algorithm="RS256", jwt_public_key=str(key_file))

    token = mint_token(inline, "acct-9", "bob", private_key=private)

    assert TokenVerifier(inline).verify(token) == Principal("acct-9", "bob")
    assert TokenVerifier(from_file).verify(token) == Principal("acct-9", "bob")


def test_an_hs256_token_made_with_the_rs256_public_key_as_secret_is_refused(
    rsa_keys: tuple[str, str],
):
    _, public = rsa_keys
    settings = Settings(jwt_algorithm="RS256", jwt_public_key=public)
    claims = {"sub": "mallory", "account_id": "victim", "exp": int(time.time()) + 60}
    # The classic algorithm confusion: the public key is public, so anyone can HMAC with it.
    # PyJWT refuses to sign so, hence the token is put together by hand.
    signing_input = b".".join(
        base64url_encode(json.dumps(part).encode())
        for part in ({"alg": "HS256", "typ": "JWT"}, claims)
    )
    signature = hmac.new(public.encode(), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + base64url_encode(signature)).decode()

    with pytest.raises(InvalidToken, match="not signed with RS256"):
        TokenVerifier(settings).verify(forged)


@pytest.mark.parametrize(
    "settings, setting",
    [
        (Settings(jwt_algorithm="HS256"), "GOALWORKER_JWT_SECRET is not set"),
        (Settings(jwt_secret=SecretStr("short")), "at least 32"),
        (Settings(jwt_algorithm="RS256"), "GOALWORKER_JWT_PUBLIC_KEY is not set"),
        (Settings(jwt_algorithm="RS256", jwt_public_key="/no/such.pem"), "neither PEM"),
        (
            Settings(jwt_algorithm="RS256", jwt_public_key="-----BEGIN PUBLIC KEY-----\nx\n"),
            "not a usable RSA public key",
        ),
    ],
)
def test_a_verifier_without_a_usable_key_refuses_to_start(settings: Settings, setting: str):
    with pytest.raises(AuthNotConfigured, match=setting):
        TokenVerifier(settings)


def test_rs256_minting_needs_the_private_key(rsa_keys: tuple[str, str]):
    settings = Settings(jwt_algorithm="RS256", jwt_public_key=rsa_keys[1])

    with pytest.raises(AuthNotConfigured, match="--private-key"):
        mint_token(settings, "acct", "alice")
