"""The site file's ``auth`` section: how people sign in (``local`` PAM or the factory's
``oidc`` provider) and the Unix accounts their jobs run as. Defaults come from the schema;
keys it leaves optional without a default (the explicit OIDC endpoints, the client secret
file) are "" when absent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LocalAuth:
    group: str
    admin_users: tuple[str, ...]


@dataclass(frozen=True)
class OidcAuth:
    issuer: str
    client_id: str
    client_secret_file: str  # "": read client_secret_env
    client_secret_env: str
    authorize_url: str  # the four endpoints: "" = from discovery
    token_url: str
    userinfo_url: str
    jwks_url: str
    scopes: tuple[str, ...]
    username_claim: str
    groups_claim: str
    admin_groups: tuple[str, ...]


@dataclass(frozen=True)
class UnixUsers:
    create: bool
    shell: str
    min_uid: int
    reserved_names: tuple[str, ...]


@dataclass(frozen=True)
class AuthSettings:
    type: str
    local: LocalAuth | None  # given with type "local"
    oidc: OidcAuth | None  # given with type "oidc"
    unix_users: UnixUsers


def build_auth(d: Mapping[str, Any]) -> AuthSettings:
    local, unix = d.get("local"), d["unix_users"]
    return AuthSettings(
        type=d["type"],
        local=(
            LocalAuth(group=local["group"], admin_users=tuple(local["admin_users"]))
            if local is not None
            else None
        ),
        oidc=_oidc(d.get("oidc")),
        unix_users=UnixUsers(
            create=unix["create"],
            shell=unix["shell"],
            min_uid=unix["min_uid"],
            reserved_names=tuple(unix["reserved_names"]),
        ),
    )


def _oidc(o: Mapping[str, Any] | None) -> OidcAuth | None:
    if o is None:
        return None
    return OidcAuth(
        issuer=o["issuer"].rstrip("/"),
        client_id=o["client_id"],
        client_secret_file=o.get("client_secret_file") or "",
        client_secret_env=o["client_secret_env"],
        authorize_url=o.get("authorize_url") or "",
        token_url=o.get("token_url") or "",
        userinfo_url=o.get("userinfo_url") or "",
        jwks_url=o.get("jwks_url") or "",
        scopes=tuple(o["scopes"]),
        username_claim=o["username_claim"],
        groups_claim=o["groups_claim"],
        admin_groups=tuple(o["admin_groups"]),
    )
