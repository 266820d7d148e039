"""ID token checks, user names and the site → authenticator settings (pure logic)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from factoryhub.hub.hub_config import SecretMissing, hub_settings
from factoryhub.hub.oidc import (
    IdTokenError,
    check_username,
    endpoints_from_discovery,
    groups_of,
    verify_id_token,
)
from factoryhub.hub.site.loader import example_site_path, parse_site

ISSUER = "http://127.0.0.1:9000"


def keypair(kid: str) -> tuple[object, dict]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update(kid=kid, alg="RS256", use="sig")
    return key, public


KEY, PUBLIC = keypair("k1")
OTHER_KEY, _ = keypair("k1")  # same kid, different key: a forgery
JWKS = {"keys": [PUBLIC]}


def token(key: object = KEY, **claims: object) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "factoryhub", "sub": "ravi", "iat": now, "exp": now + 300}
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


def test_a_good_token_gives_its_claims() -> None:
    claims = verify_id_token(token(groups=["acme-ai"]), JWKS, ISSUER, "factoryhub")
    assert claims["sub"] == "ravi" and claims["groups"] == ["acme-ai"]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda: token(aud="another-client"), "issued for another client"),
        (lambda: token(iss="http://127.0.0.1:9999"), "issued by another provider"),
        (lambda: token(exp=int(time.time()) - 3600), "expired"),
        (lambda: token(OTHER_KEY), "signature does not check out"),
        (lambda: "not.a.jwt", "not a JWT"),
    ],
)
def test_bad_tokens_are_refused(bad, reason: str) -> None:
    with pytest.raises(IdTokenError, match=reason):
        verify_id_token(bad(), JWKS, ISSUER, "factoryhub")


def test_unsigned_token_is_refused() -> None:
    unsigned = jwt.encode({"iss": ISSUER, "aud": "factoryhub", "sub": "x"}, None, algorithm="none")
    with pytest.raises(IdTokenError):
        verify_id_token(unsigned, JWKS, ISSUER, "factoryhub")


@pytest.mark.parametrize("name", ["ravi", "a", "_svc", "ada-lovelace", "x" * 32])
def test_posix_user_names_pass(name: str) -> None:
    assert check_username(name, "preferred_username") == name


@pytest.mark.parametrize(
    "name", ["Ravi", "bad user", "9lives", "x" * 33, "", None, "ravi\n", "../root", "ravi;id", 7]
)
def test_other_user_names_are_refused_with_advice(name: object) -> None:
    with pytest.raises(ValueError, match="cannot be used on the cluster"):
        check_username(name, "preferred_username")


def test_groups_claim_shapes() -> None:
    assert groups_of({"groups": ["a", "b", 3]}, "groups") == ["a", "b"]
    assert groups_of({"groups": "a"}, "groups") == ["a"]
    assert groups_of({}, "groups") == []


def test_discovery_must_be_for_the_issuer() -> None:
    doc = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/auth",
        "token_endpoint": f"{ISSUER}/token",
        "userinfo_endpoint": f"{ISSUER}/me",
        "jwks_uri": f"{ISSUER}/jwks",
    }
    assert endpoints_from_discovery(ISSUER + "/", doc).token_url == f"{ISSUER}/token"
    with pytest.raises(ValueError, match="names issuer"):
        endpoints_from_discovery("http://127.0.0.1:9001", doc)
    with pytest.raises(ValueError, match="lacks jwks_uri"):
        endpoints_from_discovery(ISSUER, {k: v for k, v in doc.items() if k != "jwks_uri"})


def example() -> dict:
    return yaml.safe_load(example_site_path().read_text())


def test_oidc_settings_come_from_the_site_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    data = example()
    data["auth"]["oidc"]["client_secret_file"] = str(secret)
    settings = hub_settings(parse_site(data), {})
    auth = settings["FactoryOIDCAuthenticator"]
    assert settings["JupyterHub"]["authenticator_class"].endswith("FactoryOIDCAuthenticator")
    assert auth["client_secret"] == "s3cret"
    assert auth["issuer"] == "http://127.0.0.1:9000"
    assert auth["oauth_callback_url"] == "http://127.0.0.1:8000/hub/oauth_callback"
    assert "authorize_url" not in auth  # from discovery
    assert auth["admin_groups"] == {"factory-admins"}
    assert auth["create_unix_users"] is True and auth["manage_slurm_associations"] is True
    projects = settings["FactorySlurmSpawner"]["projects"]
    assert [p["account"] for p in projects] == ["acme-ai", "climate-lab", "factory-ops"]


def test_client_secret_from_the_environment_or_a_clear_error() -> None:
    data = example()
    del data["auth"]["oidc"]["client_secret_file"]
    site = parse_site(data)
    auth = hub_settings(site, {"FACTORYHUB_OIDC_CLIENT_SECRET": "env-secret"})
    assert auth["FactoryOIDCAuthenticator"]["client_secret"] == "env-secret"
    with pytest.raises(SecretMissing, match="FACTORYHUB_OIDC_CLIENT_SECRET"):
        hub_settings(site, {})
    data["auth"]["oidc"]["client_secret_file"] = "/nonexistent/secret"
    with pytest.raises(SecretMissing, match="client_secret_file: cannot read /nonexistent/secret"):
        hub_settings(parse_site(data), {})
