"""The local OpenID Connect provider itself: discovery, sign-in, tokens, cookies, lifecycle."""

from __future__ import annotations

import hashlib
import json
import secrets
import stat
import subprocess
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from .idp_fixtures import (
    DEMO_PASSWORD,
    HUB_CALLBACK,
    REPO,
    TEST_PASSWORD,
    LoginRefused,
    RunningIdp,
    idp_module,
    jwt_claims,
    login_code_flow,
    start_authorization,
    submit_login,
)

try:  # the hub's conftest provides `idp`; before it does, take it from the fixtures module
    from .conftest import idp as _idp_from_conftest  # noqa: F401
except ImportError:
    from .idp_fixtures import idp  # noqa: F401

try:
    import jwt  # PyJWT (a jupyterhub dependency)
except ImportError:  # pragma: no cover
    jwt = None

HUB_COOKIES = {"jupyterhub-session-id", "jupyterhub-hub-login", "_xsrf"}


def verified_claims(idp: RunningIdp, id_token: str) -> dict:
    """The ID token's claims, its RS256 signature checked with the provider's JWKS."""
    if jwt is None:
        return jwt_claims(id_token)
    jwks = httpx.get(idp.discovery()["jwks_uri"], timeout=10).json()
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == "RS256"
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    return jwt.decode(
        id_token, key.key, algorithms=["RS256"], audience=idp.client_id, issuer=idp.issuer
    )


def test_healthz(idp: RunningIdp) -> None:
    resp = httpx.get(f"{idp.issuer}/healthz", timeout=10)
    assert resp.status_code == 200


def test_discovery(idp: RunningIdp) -> None:
    d = idp.discovery()
    assert d["issuer"] == idp.issuer
    for key, path in {
        "authorization_endpoint": "/auth",
        "token_endpoint": "/token",
        "userinfo_endpoint": "/me",
        "jwks_uri": "/jwks",
        "end_session_endpoint": "/session/end",
    }.items():
        assert d[key] == f"{idp.issuer}{path}"
    assert "S256" in d["code_challenge_methods_supported"]
    assert "plain" not in d["code_challenge_methods_supported"]
    assert d["response_types_supported"] == ["code"]
    assert {"openid", "profile", "email", "groups"} <= set(d["scopes_supported"])
    assert {"groups", "preferred_username", "email", "name"} <= set(d["claims_supported"])
    assert set(d["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    assert d["id_token_signing_alg_values_supported"] == ["RS256"]


def test_code_flow_ravi(idp: RunningIdp) -> None:
    tokens = login_code_flow(idp, "ravi", DEMO_PASSWORD)
    assert tokens["token_type"].lower() == "bearer"
    assert 3500 <= tokens["expires_in"] <= 3600
    claims = verified_claims(idp, tokens["id_token"])
    assert claims["sub"] == "ravi"
    assert claims["preferred_username"] == "ravi"
    assert claims["groups"] == ["climate-lab", "acme-ai"]
    assert claims["aud"] == idp.client_id
    assert claims["iss"] == idp.issuer
    assert claims["email"] == "ravi@factory.example"
    assert claims["name"]
    assert 3500 <= claims["exp"] - claims["iat"] <= 3600


def test_userinfo_has_groups(idp: RunningIdp) -> None:
    tokens = login_code_flow(idp, "ada", DEMO_PASSWORD)
    resp = httpx.get(
        f"{idp.issuer}/me",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["sub"] == "ada"
    assert info["preferred_username"] == "ada"
    assert info["groups"] == ["factory-admins", "climate-lab"]
    assert info["email"] == "ada@factory.example"


def test_userinfo_refuses_a_bad_token(idp: RunningIdp) -> None:
    resp = httpx.get(f"{idp.issuer}/me", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert resp.status_code == 401


def test_client_secret_post(idp: RunningIdp) -> None:
    tokens = login_code_flow(idp, "sofia", DEMO_PASSWORD, auth_method="post")
    assert jwt_claims(tokens["id_token"])["groups"] == ["acme-ai"]


def test_groups_scope_controls_groups(idp: RunningIdp) -> None:
    tokens = login_code_flow(idp, "tara", DEMO_PASSWORD, scope="openid profile")
    claims = jwt_claims(tokens["id_token"])
    assert claims["preferred_username"] == "tara"
    assert "groups" not in claims and "email" not in claims


@pytest.mark.parametrize(
    ("username", "groups"),
    [("nora", []), ("stan", ["factory-staff"]), ("fhtest-oidc", ["fhtest-project"])],
)
def test_groups_of_other_users(idp: RunningIdp, username: str, groups: list[str]) -> None:
    password = TEST_PASSWORD if username.startswith("fhtest-") else DEMO_PASSWORD
    claims = jwt_claims(login_code_flow(idp, username, password)["id_token"])
    assert claims["groups"] == groups


def test_explicit_preferred_username(idp: RunningIdp) -> None:
    claims = jwt_claims(login_code_flow(idp, "fhtest-oidc-badname", TEST_PASSWORD)["id_token"])
    assert claims["sub"] == "fhtest-oidc-badname"
    assert claims["preferred_username"] == "Bad User!"


def test_login_page(idp: RunningIdp) -> None:
    with httpx.Client(timeout=10) as client:
        page = start_authorization(idp, client).login_page
    assert page.status_code == 200
    assert urlsplit(str(page.url)).path.startswith("/interaction/")
    html = page.text
    assert "AI Factory sign-in" in html
    for selector in ('name="username"', 'name="password"', 'type="password"', 'id="sign-in"'):
        assert selector in html
    assert DEMO_PASSWORD not in html and idp.client_secret not in html
    assert "Invalid username or password" not in html


@pytest.mark.parametrize(
    ("username", "password"),
    [("ravi", "wrong-password"), ("no-such-user", DEMO_PASSWORD), ("ravi", "")],
)
def test_wrong_password_shows_the_form_again(idp: RunningIdp, username: str, password: str) -> None:
    with httpx.Client(timeout=10) as client:
        auth = start_authorization(idp, client)
        with pytest.raises(LoginRefused) as refused:
            submit_login(idp, auth, username, password)
        resp = refused.value.response
        assert resp.status_code == 401
        assert "location" not in resp.headers
        assert "Invalid username or password" in resp.text
        assert 'name="password"' in resp.text
        # the form shown again still works, with the right password
        auth.login_page = resp
        callback = submit_login(idp, auth, "ravi", DEMO_PASSWORD)
    assert "code" in parse_qs(urlsplit(callback).query)


def test_authorize_without_pkce_is_refused(idp: RunningIdp) -> None:
    with httpx.Client(timeout=10) as client:
        resp = client.get(
            f"{idp.issuer}/auth",
            params={
                "client_id": idp.client_id,
                "redirect_uri": idp.redirect_uri,
                "response_type": "code",
                "scope": "openid",
                "state": "s1",
            },
        )
    assert resp.status_code in (302, 303)
    location = resp.headers["location"]
    assert location.startswith(idp.redirect_uri)
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["invalid_request"]
    assert "PKCE" in query["error_description"][0]
    assert "code" not in query


def test_plain_pkce_is_refused(idp: RunningIdp) -> None:
    with httpx.Client(timeout=10) as client:
        auth = start_authorization(
            idp, client, code_challenge="x" * 43, code_challenge_method="plain"
        )
    location = auth.login_page.headers.get("location", "")
    assert location.startswith(idp.redirect_uri)
    assert parse_qs(urlsplit(location).query)["error"] == ["invalid_request"]


def test_wrong_code_verifier_is_refused(idp: RunningIdp) -> None:
    with httpx.Client(timeout=10) as client:
        auth = start_authorization(idp, client)
        callback = submit_login(idp, auth, "ravi", DEMO_PASSWORD)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    resp = httpx.post(
        f"{idp.issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": idp.redirect_uri,
            "code_verifier": secrets.token_urlsafe(32),
        },
        auth=(idp.client_id, idp.client_secret),
        timeout=10,
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_refused(idp: RunningIdp) -> None:
    resp = httpx.post(
        f"{idp.issuer}/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": idp.redirect_uri},
        auth=(idp.client_id, "not-the-secret"),
        timeout=10,
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


def test_unregistered_redirect_uri_is_not_followed(idp: RunningIdp) -> None:
    with httpx.Client(timeout=10) as client:
        auth = start_authorization(idp, client, redirect_uri="http://127.0.0.1:9999/evil")
    assert auth.login_page.status_code == 400
    assert "location" not in auth.login_page.headers


def test_cookie_names_do_not_collide_with_the_hub(idp: RunningIdp) -> None:
    names: set[str] = set()

    def collect(resp: httpx.Response) -> None:
        for header in resp.headers.get_list("set-cookie"):
            names.update(SimpleCookie(header).keys())

    with httpx.Client(timeout=10, event_hooks={"response": [collect]}) as client:
        auth = start_authorization(idp, client)
        submit_login(idp, auth, "ravi", DEMO_PASSWORD)
    assert names, "the provider set no cookies"
    assert not names & HUB_COOKIES
    assert all(name.startswith("fh_idp_") for name in names), names
    assert "fh_idp_session" in names and "fh_idp_interaction" in names


def test_second_authorization_reuses_the_session(idp: RunningIdp) -> None:
    """Signed in once, a second authorization answers with a code, no login page."""
    with httpx.Client(timeout=10) as client:
        first = start_authorization(idp, client)
        submit_login(idp, first, "ravi", DEMO_PASSWORD)
        second = start_authorization(idp, client)
    location = second.login_page.headers.get("location", "")
    assert location.startswith(HUB_CALLBACK)
    assert "code" in parse_qs(urlsplit(location).query)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_lifecycle_keys_persist_and_files_are_private(tmp_path: Path) -> None:
    mod = idp_module()
    port, state = 19001, tmp_path / "idp"
    secret = mod.client_secret(state)
    assert secret == mod.client_secret(state)
    client = mod.hub_client("http://127.0.0.1:18000/", secret)
    assert client["redirect_uris"] == [HUB_CALLBACK]
    pid = mod.up(port=port, state_dir=state, clients=[client], repo=REPO)
    try:
        assert mod.status(state) == pid
        assert mod.up(port=port, state_dir=state, clients=[client], repo=REPO) == pid
        kids = [
            k["kid"] for k in httpx.get(f"http://127.0.0.1:{port}/jwks", timeout=10).json()["keys"]
        ]
        assert all("d" not in k for k in httpx.get(f"http://127.0.0.1:{port}/jwks").json()["keys"])
        for name in ("client-secret", "clients.json", "jwks.json", "cookie-secret"):
            assert _mode(state / name) == 0o600, name
        assert _mode(state) == 0o700
        assert json.loads((state / "clients.json").read_text()) == [client]
        # other clients: restarted with them; the signing key stays
        other = {**client, "client_id": "another"}
        pid2 = mod.up(port=port, state_dir=state, clients=[client, other], repo=REPO)
        assert pid2 != pid and mod.status(state) == pid2
        again = [
            k["kid"] for k in httpx.get(f"http://127.0.0.1:{port}/jwks", timeout=10).json()["keys"]
        ]
        assert again == kids
    finally:
        assert mod.down(state)
    assert mod.status(state) is None
    assert not mod.down(state)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_up_reports_a_failed_start(tmp_path: Path) -> None:
    mod = idp_module()
    bad_users = tmp_path / "users.json"
    bad_users.write_text("[]")
    state = tmp_path / "idp"
    (state).mkdir()
    (state / "jwks.json").write_text("not json")
    with pytest.raises(mod.IdpError, match="exited"):
        mod.up(port=19002, state_dir=state, users_file=bad_users, clients=[], repo=REPO)
    assert mod.status(state) is None


def test_hash_helper_matches_python_scrypt() -> None:
    out = subprocess.run(
        ["node", str(REPO / "local/idp/server.mjs"), "hash", "s3cret"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    record = json.loads(out)
    digest = hashlib.scrypt(
        b"s3cret", salt=bytes.fromhex(record["salt"]), n=16384, r=8, p=1, dklen=32
    )
    assert digest.hex() == record["password_scrypt"]


def test_find_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = idp_module()
    monkeypatch.setenv("FACTORYHUB_REPO", str(tmp_path))
    with pytest.raises(mod.IdpError, match="FACTORYHUB_REPO"):
        mod.find_repo()
    monkeypatch.setenv("FACTORYHUB_REPO", str(REPO))
    assert mod.find_repo() == REPO
    monkeypatch.delenv("FACTORYHUB_REPO")
    assert mod.find_repo(REPO / "local" / "idp") == REPO
    with pytest.raises(mod.IdpError, match="cannot find"):
        mod.find_repo(tmp_path)
