"""OpenID Connect pieces the authenticator needs, as pure functions: discovery, ID token
verification, user names. Kept apart from the JupyterHub class so they can be tested with
real tokens from a real provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from factoryhub.spawners.model.users import is_posix_name

SIGNING_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


class IdTokenError(ValueError):
    """The ID token must not be trusted; the message says why."""


@dataclass(frozen=True)
class Endpoints:
    authorize_url: str
    token_url: str
    userinfo_url: str
    jwks_url: str


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def endpoints_from_discovery(issuer: str, document: Mapping[str, Any]) -> Endpoints:
    """The endpoints of a discovery document, which must be for ``issuer`` itself."""
    if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise ValueError(
            f"the discovery document at {discovery_url(issuer)} names issuer "
            f"{document.get('issuer')!r}, not {issuer!r}"
        )
    missing = [
        k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not document.get(k)
    ]
    if missing:
        raise ValueError(f"the discovery document lacks {', '.join(missing)}")
    return Endpoints(
        authorize_url=document["authorization_endpoint"],
        token_url=document["token_endpoint"],
        userinfo_url=document.get("userinfo_endpoint", ""),
        jwks_url=document["jwks_uri"],
    )


def verify_id_token(
    token: str, jwks: Mapping[str, Any], issuer: str, client_id: str
) -> dict[str, Any]:
    """The claims of ``token`` once its signature (by a key of ``jwks``), issuer, audience
    and lifetime are checked. Raises :class:`IdTokenError` otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise IdTokenError(f"not a JWT: {e}") from None
    keys = [
        k for k in jwks.get("keys", []) if not header.get("kid") or k.get("kid") == header["kid"]
    ]
    if not keys:
        raise IdTokenError(
            f"signed with a key the identity provider does not publish (kid {header.get('kid')!r})"
        )
    last: Exception | None = None
    for key in keys:
        try:
            return jwt.decode(
                token,
                key=jwt.PyJWK.from_dict(dict(key)).key,
                algorithms=SIGNING_ALGORITHMS,
                audience=client_id,
                issuer=issuer.rstrip("/"),
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
                leeway=30,
            )
        except jwt.InvalidAudienceError:
            raise IdTokenError(f"issued for another client, not {client_id!r}") from None
        except jwt.InvalidIssuerError:
            raise IdTokenError(f"issued by another provider, not {issuer!r}") from None
        except jwt.ExpiredSignatureError:
            raise IdTokenError("expired") from None
        except jwt.PyJWTError as e:
            last = e
    raise IdTokenError(f"its signature does not check out: {last}")


def check_username(name: Any, claim: str) -> str:
    """``name`` if it is a valid POSIX user name; ValueError with advice otherwise."""
    if not is_posix_name(name):
        shown = repr(name)[:80]
        raise ValueError(
            f"Your user name from the identity provider ({claim} = {shown}) cannot be used "
            "on the cluster: it must be 1 to 32 lowercase letters, digits, _ and -, starting "
            "with a letter or _. Please ask the factory's support to fix your account."
        )
    return name


def groups_of(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The groups or entitlements in ``claim`` (a list of strings, or one string)."""
    value = claims.get(claim)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [g for g in value if isinstance(g, str)]
    return []
