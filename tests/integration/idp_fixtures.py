"""A real local OpenID Connect provider (``local/idp/server.mjs``) for the integration tests.

``idp`` (session scope) runs one provider on 127.0.0.1:19000 with the demo users plus the
test users below and one client, ``factoryhub-test``, whose redirect URI is the test hub's
callback. ``login_code_flow`` signs a user in through the provider's own login page (the
authorization code flow with PKCE, as a browser would) and returns the token response.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from tests.support.hub import REPO

IDP_PORT = 19000
HUB_CALLBACK = "http://127.0.0.1:18000/hub/oauth_callback"
TEST_CLIENT_ID = "factoryhub-test"
DEMO_PASSWORD = "factory-demo"  # the demo users' documented local-only password
TEST_PASSWORD = "fhtest-oidc-password"
SCOPE = "openid profile email groups"

# username -> extra claims; every test user's password is TEST_PASSWORD
TEST_USERS: dict[str, dict[str, Any]] = {
    "fhtest-oidc": {"name": "FH Test", "groups": ["fhtest-project"]},
    "fhtest-oidc-two": {"name": "FH Test Two", "groups": ["fhtest-project", "acme-ai"]},
    "fhtest-oidc-nogroups": {"name": "FH Test Nogroups", "groups": []},
    # the test course (oidc_fixtures.COURSE): a trainer by group, participants by group and
    # by name
    "fhtest-trainer": {"name": "FH Trainer", "groups": ["fhtest-trainers"]},
    "fhtest-pupil-a": {"name": "FH Pupil A", "groups": ["fhtest-course-group"]},
    "fhtest-pupil-b": {"name": "FH Pupil B", "groups": ["fhtest-course-group"]},
    "fhtest-pupil-c": {"name": "FH Pupil C", "groups": []},
    # identities whose user name claim is a system account or someone else's account: the
    # hub must refuse them (tests/integration/test_security_signin.py)
    "fhtest-evil-root": {"name": "Evil Root", "groups": ["acme-ai"], "preferred_username": "root"},
    "fhtest-evil-daemon": {
        "name": "Evil Daemon",
        "groups": ["acme-ai"],
        "preferred_username": "daemon",
    },
    "fhtest-evil-sysacct": {
        "name": "Evil System Account",
        "groups": ["acme-ai"],
        "preferred_username": "fhtest-sysacct",
    },
    "fhtest-evil-twin": {
        "name": "Evil Twin",
        "groups": ["fhtest-project"],
        "preferred_username": "fhtest-oidc",
    },
    # not a valid POSIX user name: the hub must refuse it
    "fhtest-oidc-badname": {
        "name": "Bad User",
        "groups": ["acme-ai"],
        "preferred_username": "Bad User!",
    },
}


def idp_module() -> ModuleType:
    """``factoryhub.local.idp``, installed or (before ``make install``) from the checkout."""
    try:
        from factoryhub.local import idp
    except ImportError:
        spec = importlib.util.spec_from_file_location(
            "_factoryhub_local_idp", REPO / "local/idp.py"
        )
        assert spec and spec.loader
        idp = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = idp
        spec.loader.exec_module(idp)
    return idp


def scrypt_record(username: str, password: str, **claims: Any) -> dict[str, Any]:
    """A users-file record; the same scrypt parameters as ``server.mjs hash``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=16384, r=8, p=1, dklen=32)
    return {
        "username": username,
        "salt": salt.hex(),
        "password_scrypt": digest.hex(),
        "email": f"{username}@factory.example",
        **claims,
    }


def write_users_file(path: Path) -> Path:
    demo = json.loads((REPO / "local/idp/demo-users.json").read_text())["users"]
    test = [scrypt_record(name, TEST_PASSWORD, **claims) for name, claims in TEST_USERS.items()]
    path.write_text(json.dumps({"users": demo + test}, indent=2))
    return path


@dataclass
class RunningIdp:
    issuer: str
    client_id: str
    client_secret: str
    port: int
    redirect_uri: str
    state_dir: Path
    users_file: Path
    pid: int

    def discovery(self) -> dict[str, Any]:
        resp = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10)
        resp.raise_for_status()
        return resp.json()


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdp]:
    mod = idp_module()
    state_dir = tmp_path_factory.mktemp("idp-state")
    users = write_users_file(state_dir / "users.json")
    secret = secrets.token_urlsafe(24)
    client = {"client_id": TEST_CLIENT_ID, "client_secret": secret, "redirect_uris": [HUB_CALLBACK]}
    pid = mod.up(port=IDP_PORT, state_dir=state_dir, users_file=users, clients=[client], repo=REPO)
    try:
        yield RunningIdp(
            issuer=f"http://127.0.0.1:{IDP_PORT}",
            client_id=TEST_CLIENT_ID,
            client_secret=secret,
            port=IDP_PORT,
            redirect_uri=HUB_CALLBACK,
            state_dir=state_dir,
            users_file=users,
            pid=pid,
        )
    finally:
        mod.down(state_dir)


# ---------------------------------------------------------------- the browser side of the flow
class LoginRefused(AssertionError):
    """The provider did not hand out a code; ``response`` is its last answer."""

    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(f"{message}: HTTP {response.status_code}")
        self.response = response


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    verifier = b64url(secrets.token_bytes(32))
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, not verified."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def follow(
    client: httpx.Client, resp: httpx.Response, stop_at: str, limit: int = 10
) -> httpx.Response:
    """Follow redirects; stop at a non-redirect or at a Location starting with ``stop_at``."""
    for _ in range(limit):
        location = resp.headers.get("location")
        if resp.status_code not in (301, 302, 303, 307, 308) or not location:
            return resp
        if location.startswith(stop_at):
            return resp
        resp = client.get(urljoin(str(resp.url), location))
    raise AssertionError("too many redirects")


def form_action(html: str, base: str) -> str:
    match = re.search(r'<form[^>]*\baction="([^"]+)"', html)
    assert match, "no form on the login page"
    return urljoin(base, match.group(1).replace("&amp;", "&"))


@dataclass
class Authorization:
    client: httpx.Client
    verifier: str
    state: str
    nonce: str
    login_page: httpx.Response


def start_authorization(idp: RunningIdp, client: httpx.Client, **params: str) -> Authorization:
    """GET the authorize endpoint and follow to the provider's login page."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    query = {
        "client_id": idp.client_id,
        "redirect_uri": idp.redirect_uri,
        "response_type": "code",
        "scope": SCOPE,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **params,
    }
    resp = client.get(f"{idp.issuer}/auth", params={k: v for k, v in query.items() if v})
    page = follow(client, resp, idp.redirect_uri)
    return Authorization(client, verifier, state, nonce, page)


def submit_login(idp: RunningIdp, auth: Authorization, username: str, password: str) -> str:
    """POST the login form; the redirect URI with the code. Raises LoginRefused."""
    page = auth.login_page
    if page.status_code not in (200, 401) or 'name="password"' not in page.text:
        raise LoginRefused("no login page", page)
    action = form_action(page.text, str(page.url))
    resp = auth.client.post(action, data={"username": username, "password": password})
    if resp.status_code != 303:
        raise LoginRefused("sign-in refused", resp)
    resp = follow(auth.client, resp, idp.redirect_uri)
    location = resp.headers.get("location", "")
    if not location.startswith(idp.redirect_uri):
        raise LoginRefused("no redirect to the client", resp)
    return location


def exchange_code(
    idp: RunningIdp, callback_url: str, verifier: str, state: str, auth_method: str = "basic"
) -> dict[str, Any]:
    query = parse_qs(urlsplit(callback_url).query)
    assert "error" not in query, query
    assert query["state"] == [state]
    assert query["iss"] == [idp.issuer]  # RFC 9207 issuer identification
    data = {
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "redirect_uri": idp.redirect_uri,
        "code_verifier": verifier,
    }
    kw: dict[str, Any] = {}
    if auth_method == "basic":
        kw["auth"] = (idp.client_id, idp.client_secret)
    else:
        data.update(client_id=idp.client_id, client_secret=idp.client_secret)
    resp = httpx.post(f"{idp.issuer}/token", data=data, timeout=10, **kw)
    resp.raise_for_status()
    return resp.json()


def login_code_flow(
    idp: RunningIdp, username: str, password: str, auth_method: str = "basic", **params: str
) -> dict[str, Any]:
    """Sign ``username`` in through the login page; the token response (id_token, access_token)."""
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        auth = start_authorization(idp, client, **params)
        callback = submit_login(idp, auth, username, password)
        tokens = exchange_code(idp, callback, auth.verifier, auth.state, auth_method)
    assert jwt_claims(tokens["id_token"]).get("nonce") == auth.nonce
    return tokens
