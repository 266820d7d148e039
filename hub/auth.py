"""Sign-in with the factory's OpenID Connect provider.

``FactoryOIDCAuthenticator`` is oauthenticator's ``GenericOAuthenticator`` configured by
the issuer URL alone (endpoints from discovery, PKCE on), plus what a factory needs:

- the ID token is verified (signature with the provider's published keys, issuer,
  audience, lifetime) and its claims are the user's identity;
- the user name claim must be a valid POSIX user name, or sign-in is refused with advice;
- reserved names and system accounts (uid below ``min_uid``) are refused, and an account is
  bound to the provider identity (issuer, ``sub``) that first signed in to it;
- groups come from a configurable claim and become JupyterHub groups (projects and
  admins follow from them);
- on sign-in, in the "local" Slurm access mode, the user's Unix account is created where
  the site wants it (otherwise an unknown user is told so) and the user is added to the
  Slurm accounts of their projects;
- in the "rest" access mode (the hub in a pod, whose passwd holds nobody) who exists is
  Slurm's word: a person may sign in when Slurm's accounting has an association of theirs
  in an account of one of their projects; nothing on the hub's host is asked;
- when the provider does not answer, the login page says so instead of sending the
  browser to a dead address.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Any as AnyTrait
from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, Unicode, default

from factoryhub.hub.identities import IdentityConflict, IdentityStore
from factoryhub.hub.oidc import (
    IdTokenError,
    check_username,
    discovery_url,
    endpoints_from_discovery,
    groups_of,
    verify_id_token,
)
from factoryhub.spawners.courses.store import CourseStore
from factoryhub.spawners.model.courses import course_groups, load_courses
from factoryhub.spawners.model.projects import load_projects, projects_for
from factoryhub.spawners.slurm.access import ACCESS_MODES, make_client
from factoryhub.spawners.slurm.accounts import AccountingError, ensure_user_in_account
from factoryhub.spawners.slurm.client import SlurmClient, SlurmError, SlurmUnavailable, SlurmUser
from factoryhub.spawners.system_accounts import (
    SystemAccountError,
    check_not_system_account,
    lookup_uid,
    no_uid,
)


class FactoryLoginHandler(OAuthLoginHandler):
    """Checks that the identity provider answers before sending the browser there."""

    async def get(self) -> None:
        problem = await self.authenticator.provider_problem()
        if problem:
            raise web.HTTPError(503, problem)
        super().get()


class FactoryOIDCAuthenticator(GenericOAuthenticator):
    login_handler = FactoryLoginHandler

    # oauthenticator's endpoint traits, typed for mypy (annotations only: the traits stay).
    authorize_url: str
    token_url: str
    userdata_url: str

    issuer = Unicode(
        help="The identity provider's issuer URL; endpoints come from its discovery document.",
    ).tag(config=True)

    jwks_url = Unicode(
        help="URL of the provider's signing keys (JWKS); from discovery when empty.",
    ).tag(config=True)

    groups_claim = Unicode(
        "groups", help="The claim holding the user's groups or entitlements."
    ).tag(config=True)

    projects = List(
        Dict(),
        help="Projects from the site file (name, account, groups, ...): a user is added to "
        "the Slurm accounts of the projects whose groups they are in.",
    ).tag(config=True)

    manage_slurm_associations = Bool(
        False, help="Add users to their projects' Slurm accounts (sacctmgr) at sign-in."
    ).tag(config=True)

    create_unix_users = Bool(
        False, help="Create a user's Unix account and home on first sign-in."
    ).tag(config=True)

    unix_shell = Unicode("/bin/bash", help="Login shell of created Unix accounts.").tag(config=True)

    min_uid = Int(
        1000,
        help="Accounts with a uid below this are system accounts: nobody signs in as them.",
    ).tag(config=True)

    reserved_usernames = List(
        Unicode(),
        help="User names nobody may sign in as, whether or not the account exists here "
        "(root, service accounts, ...).",
    ).tag(config=True)

    identities_db = Unicode(
        help="SQLite file binding each account to the provider identity (issuer, sub) that "
        "first signed in to it; sign-in is refused when they differ. Required."
    ).tag(config=True)

    courses = List(
        Dict(),
        help="Courses from the site file: a participant is put in the hub group "
        "course:<name> of each course they take, next to their IdP groups.",
    ).tag(config=True)

    courses_db = Unicode(
        "", help="The Courses service's database of trainers' edits (the participants)."
    ).tag(config=True)

    slurm_access = CaselessStrEnum(
        ACCESS_MODES,
        "local",
        help="""The site file's slurm.access. "local": users are this host's Unix users;
        "rest": users are those Slurm's accounting knows (slurm_client.user), and this
        host's user database is never read.""",
    ).tag(config=True)

    slurm_rest = Dict(help='The site file\'s slurm.rest (the "rest" access mode).').tag(config=True)

    slurm_client = AnyTrait(
        help="The Slurm client that says who exists in the rest mode (make_client)."
    )

    @default("slurm_client")
    def _default_slurm_client(self) -> SlurmClient:
        return make_client(self.slurm_access, self.slurm_rest)

    provider_timeout = Float(
        5.0, help="Seconds to wait for the identity provider before telling the user it is down."
    ).tag(config=True)

    @default("login_service")
    def _default_login_service(self) -> str:
        return "the AI Factory sign-in"

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True

    @default("auth_state_groups_key")
    def _default_groups_key(self) -> Any:
        return lambda auth_state: groups_of(auth_state.get("oauth_user") or {}, self.groups_claim)

    @default("username_claim")
    def _default_username_claim(self) -> str:
        return "preferred_username"

    @default("enable_pkce")
    def _default_pkce(self) -> bool:
        return True

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        # Everyone the provider vouches for may sign in; what they may run follows from
        # their projects, and people without one get a page that says how to join one.
        return True

    async def get_user_groups(self, auth_state: dict[str, Any]) -> set[str]:
        """The IdP's groups, and the course groups of the courses the user takes (managed
        groups are replaced at each sign-in, so these must be among them)."""
        groups = set(await super().get_user_groups(auth_state))
        if self.courses:
            user = auth_state.get("oauth_user") or {}
            name = str(user.get(self.username_claim) or "")
            edits = CourseStore(self.courses_db).edits() if self.courses_db else {}
            groups |= course_groups(load_courses(self.courses, edits), name, groups)
        return groups

    # ------------------------------------------------------------ the provider

    _jwks: dict[str, Any] | None = None

    async def _fetch_json(self, url: str) -> dict[str, Any]:
        response = await AsyncHTTPClient().fetch(
            url, request_timeout=self.provider_timeout, connect_timeout=self.provider_timeout
        )
        return json.loads(response.body)

    async def discover(self) -> None:
        """Read the endpoints that are not configured from the discovery document."""
        document = await self._fetch_json(discovery_url(self.issuer))
        found = endpoints_from_discovery(self.issuer, document)
        self.authorize_url = self.authorize_url or found.authorize_url
        self.token_url = self.token_url or found.token_url
        self.userdata_url = self.userdata_url or found.userinfo_url
        self.jwks_url = self.jwks_url or found.jwks_url

    async def provider_problem(self) -> str:
        """'' when the provider answers, else what to tell people. Checked at every sign-in
        (one small request), so nobody is sent to a provider that is down."""
        try:
            await self.discover()
        except (OSError, HTTPClientError, ValueError, json.JSONDecodeError) as e:
            self.log.error("The identity provider %s did not answer: %s", self.issuer, e)
            return (
                f"The factory's sign-in service ({self.issuer}) is not reachable right now, "
                "so you cannot sign in. Please try again in a few minutes; if it persists, "
                "tell the factory's support."
            )
        return ""

    async def _signing_keys(self, refresh: bool = False) -> dict[str, Any]:
        if self._jwks is None or refresh:
            if not self.jwks_url:
                await self.discover()
            self._jwks = await self._fetch_json(self.jwks_url)
        return self._jwks

    # ------------------------------------------------------------ who signed in

    async def token_to_user(self, token_info: dict[str, Any]) -> dict[str, Any]:
        id_token = token_info.get("id_token")
        if not id_token:
            raise web.HTTPError(403, "The identity provider returned no ID token; sign-in refused.")
        try:
            try:
                claims = verify_id_token(
                    id_token, await self._signing_keys(), self.issuer, self.client_id
                )
            except IdTokenError:
                # The provider may have rotated its keys: fetch them once more.
                claims = verify_id_token(
                    id_token, await self._signing_keys(refresh=True), self.issuer, self.client_id
                )
        except IdTokenError as e:
            self.log.warning("Refused an ID token: %s", e)
            raise web.HTTPError(403, f"Sign-in refused: the identity token was {e}.") from None
        if self.groups_claim not in claims and self.userdata_url:
            userinfo = await super().token_to_user(token_info)
            if userinfo.get("sub") == claims.get("sub"):
                claims[self.groups_claim] = userinfo.get(self.groups_claim, [])
        return claims

    def user_info_to_username(self, user_info: dict[str, Any]) -> str:
        try:
            name = check_username(user_info.get(self.username_claim), self.username_claim)
            # rest: the uid rule waits for Slurm's record (provision); never this host's passwd
            uid_of = no_uid if self.slurm_access == "rest" else lookup_uid
            check_not_system_account(name, self.min_uid, self.reserved_usernames, uid_of)
        except SystemAccountError as e:
            self.log.warning("Refused a sign-in as %r: reserved or a system account", name)
            raise web.HTTPError(403, str(e)) from None
        except ValueError as e:
            raise web.HTTPError(403, str(e)) from None
        return name

    async def update_auth_model(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        auth_model = await super().update_auth_model(auth_model)
        # oauthenticator fills auth_model["groups"] only after this method: read the claim.
        user = (auth_model.get("auth_state") or {}).get("oauth_user") or {}
        await self.bind_identity(auth_model["name"], user)
        await self.provision(auth_model["name"], groups_of(user, self.groups_claim))
        return auth_model

    async def bind_identity(self, username: str, claims: dict[str, Any]) -> None:
        """The account belongs to the identity that first signed in to it (403 otherwise)."""
        if not self.identities_db:
            raise web.HTTPError(500, "The hub has no identities_db; tell the factory's support.")
        store = IdentityStore(self.identities_db)
        issuer, subject = str(claims.get("iss") or self.issuer), str(claims.get("sub") or "")
        try:
            first = await asyncio.to_thread(store.bind, username, issuer, subject)
        except IdentityConflict as e:
            self.log.warning("Refused a sign-in as %s: another identity owns it", username)
            raise web.HTTPError(403, str(e)) from None
        if first:
            self.log.info("Account %s bound to its identity at %s", username, issuer)

    # ------------------------------------------------------------ provisioning

    async def provision(self, username: str, groups: list[str]) -> None:
        """Make sure the user can run jobs: a Unix account, and Slurm associations (rest:
        that Slurm's accounting has them, in one of their projects' accounts)."""
        if self.slurm_access == "rest":
            await self.check_slurm_user(username, groups)
            return
        uid = lookup_uid(username)  # the local mode: this host's passwd is the cluster's
        if uid is not None and uid < self.min_uid:  # checked at sign-in too
            raise web.HTTPError(403, f"{username!r} is a system account.")
        if uid is None:
            if not self.create_unix_users:
                raise web.HTTPError(
                    403,
                    f"You signed in as {username}, but the cluster has no Unix account of that "
                    "name yet. Accounts come from the site's directory (LDAP): ask the factory's "
                    "support to create yours.",
                )
            await self._create_unix_user(username)
        if self.manage_slurm_associations:
            for project in projects_for(load_projects(self.projects), groups):
                try:
                    await asyncio.to_thread(ensure_user_in_account, username, project.account)
                except AccountingError as e:
                    self.log.error(
                        "Adding %s to account %s failed: %s", username, project.account, e
                    )
                    raise web.HTTPError(
                        503,
                        f"Your project {project.display_name} could not be set up on the "
                        "cluster's accounting right now. Please try again in a few minutes; if "
                        "it persists, tell the factory's support.",
                    ) from None

    async def check_slurm_user(self, username: str, groups: list[str]) -> SlurmUser:
        """The rest mode's sign-in check: Slurm's accounting has a record of ``username``
        (an association) in an account of one of their projects (any account when they are
        in no project: the home page tells them how to join one), and the record is not a
        system account's. 403 with what to ask the operators otherwise; 503 when Slurm's
        accounting did not answer."""
        try:
            user = await self.slurm_client.user(username)
        except (SlurmUnavailable, SlurmError) as e:
            self.log.error("Looking up %s in Slurm's accounting failed: %s", username, e)
            raise web.HTTPError(
                503,
                "The cluster's accounting (Slurm) did not answer, so your sign-in could not "
                "be checked. Please try again in a few minutes; if it persists, tell the "
                "factory's support.",
            ) from None
        accounts = sorted(
            {p.account for p in projects_for(load_projects(self.projects), groups) if p.account}
        )
        if user is None:
            raise web.HTTPError(403, _not_in_slurm(username, accounts))
        uid = user.uid  # Slurm's record's, where it has one (22.05's have none)
        try:
            check_not_system_account(username, self.min_uid, self.reserved_usernames, lambda _: uid)
        except SystemAccountError as e:
            raise web.HTTPError(403, str(e)) from None
        if accounts and not user.accounts.intersection(accounts):
            raise web.HTTPError(403, _not_in_project_accounts(username, accounts))
        return user

    async def _create_unix_user(self, username: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "useradd",
            "--create-home",
            "--shell",
            self.unix_shell,
            "--user-group",
            username,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode not in (0, 9):  # 9: exists already (created meanwhile)
            self.log.error("useradd %s failed: %s", username, err.decode(errors="replace"))
            raise web.HTTPError(
                500,
                f"Your Unix account {username} could not be created; tell the factory's support.",
            )
        self.log.info("Created the Unix account of %s", username)


def _ask_for(username: str, accounts: list[str]) -> str:
    """What to ask the operators for: an association in one of ``accounts``."""
    if not accounts:
        where = "your project's Slurm account"
    elif len(accounts) == 1:
        where = f"the account {accounts[0]}"
    else:
        where = "one of the accounts " + ", ".join(accounts)
    return (
        f"Ask the factory's operators to add {username} to Slurm's accounting with an "
        f"association in {where} (sacctmgr add user {username} account=...), then sign in again."
    )


def _not_in_slurm(username: str, accounts: list[str]) -> str:
    """The refusal of a person Slurm's accounting has no record of."""
    return (
        f"You signed in as {username}, but the cluster's Slurm accounting has no user "
        f"{username}, so nothing could run for you here. " + _ask_for(username, accounts)
    )


def _not_in_project_accounts(username: str, accounts: list[str]) -> str:
    """The refusal of a person whose associations are all outside their projects' accounts."""
    return (
        f"You signed in as {username}; Slurm's accounting knows you, but not in the account "
        "of any of your projects, so no job of yours could be charged. "
        + _ask_for(username, accounts)
    )
