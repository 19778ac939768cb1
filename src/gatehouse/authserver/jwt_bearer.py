"""The jwt-bearer grant (RFC 7523 section 2.1) for two kinds of assertion, told apart by ``typ``.

**ID-JAG** (draft-ietf-oauth-identity-assertion-authz-grant section 4.4; the MCP extension
``enterprise-managed-authorization``), ``typ: oauth-id-jag+jwt``, on Authlib's ``IDJAGGrant``:
the client authenticates as registered (a public client by its ``client_id``) and must have the
jwt-bearer grant type; ``iss`` is a trusted IdP of kind ``id-jag`` (and may list the clients it
vouches for); ``aud`` is this AS's issuer; ``client_id`` is the authenticated client; ``jti`` is
used once; a ``cnf.jkt`` must be the key of the request's DPoP proof. The token is for the
ID-JAG's ``resource`` (a request ``resource`` must agree), with the scopes both the request (all
of the resource's when it names none) and the ID-JAG's ``scope`` hold (MCP EMA section 7.2.1),
and no refresh token. The user (draft section 6: ``sub`` is unique per issuer only):

- ``users = "create"`` (default): just-in-time, an account ``<idp name>:<sub>`` without a
  password, made on first use. The IdP is the authority on its users, which is the point of
  enterprise-managed authorization; a local username cannot contain ``:``, so these accounts
  never collide with local ones, and an IdP's users never take over a local account.
- ``users = "existing"``: the IdP's claim ``username_claim`` names an existing, enabled local
  account; nothing is created. For an administrator who trusts the IdP to name local accounts.

**Workload identity federation** (MCP extension ``workload-identity-federation``): any other
assertion, from a trusted issuer of kind ``workload``, on Authlib's ``JWTBearerGrant``. No
client registration or authentication: the signed JWT is the credential. ``aud`` is this AS's
issuer or token endpoint; the workload's ``sub`` must match the issuer's ``subjects``; the
token's ``sub`` and ``client_id`` are that ``sub``; no refresh token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from authlib.oauth2.drafts import IDJAGGrant
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidScopeError
from authlib.oauth2.rfc7523 import JWTBearerGrant

from gatehouse.authserver import audit
from gatehouse.authserver.clients import JWT_BEARER
from gatehouse.authserver.grants import CLIENT_AUTH_METHODS, _GatehouseGrant, _requested_resources
from gatehouse.authserver.replay import first_use
from gatehouse.authserver.resources import Resource, TargetError, describable
from gatehouse.authserver.tokens import new_grant
from gatehouse.authserver.trusted_idps import assertion_header, unverified_issuer, verify_assertion
from gatehouse.authserver.users import active_user_named, provisioned_user
from gatehouse.config import TrustedIdPConfig
from gatehouse.store.models import ClientAssertionUse

ID_JAG_TYPE = IDJAGGrant.REQUIRED_TYP


def _assertion_type(request) -> object:
    header = assertion_header(request.payload.data.get("assertion"))
    return header.get("typ") if header else None


class _AssertionGrant(_GatehouseGrant):
    """What both kinds share: the trusted issuer, replay, resource and scopes."""

    KIND = ""
    idp: TrustedIdPConfig

    def _verified(self, assertion: str, audiences: list[str], essential: tuple[str, ...] = ()) -> dict:
        if assertion_header(assertion) is None:
            raise InvalidGrantError("the assertion is not a JWT in compact serialization (RFC 7523 section 2.1)")
        issuer = unverified_issuer(assertion)
        idp = self.ctx.trusted_idps.find(issuer, self.KIND)
        if idp is None:
            raise InvalidGrantError(describable(f"the assertion's issuer {issuer!r} is not trusted here for {self.KIND} assertions"))
        self.idp = idp
        claims = verify_assertion(
            assertion, idp, self.ctx.trusted_idps, audiences=[*audiences, *idp.audiences],
            leeway=self.ctx.settings.clock_leeway, essential=essential,
        )
        expires_at = datetime.fromtimestamp(claims["exp"], UTC).replace(tzinfo=None)
        if not first_use(self.db, ClientAssertionUse.__table__, expires_at, client_id=idp.issuer, jti=claims["jti"]):
            raise InvalidGrantError("the assertion was used before (jti replay, RFC 7523 section 3)")
        return claims

    def _resource(self, asserted: object = None) -> Resource:
        if asserted is not None and not isinstance(asserted, str):
            raise InvalidGrantError("the assertion's 'resource' must be a string")
        requested = _requested_resources(self.request)
        if asserted and requested and requested != [asserted]:
            raise TargetError(f"the assertion is for {asserted}, not {requested[0]}")
        resource = self.ctx.resources.resolve([asserted] if asserted else requested)
        if self.idp.resources and resource.uri not in self.idp.resources:
            raise TargetError(f"{self.idp.issuer} may not grant access to {resource.uri}")
        return resource

    def _scopes(self, resource: Resource, asserted: object = None) -> str:
        if asserted is not None and not isinstance(asserted, str):
            raise InvalidGrantError("the assertion's 'scope' must be a string")
        granted = self.ctx.resources.granted_scopes(resource, self.request.payload.scope)
        if asserted is not None:
            granted = [s for s in granted if s in asserted.split()]
        if self.idp.scopes:
            granted = [s for s in granted if s in self.idp.scopes]
        if not granted:
            raise InvalidScopeError("none of the requested scopes is granted by the assertion and this server's rules")
        return " ".join(granted)


class IdentityAssertionGrant(_AssertionGrant, IDJAGGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    KIND = "id-jag"

    @classmethod
    def check_token_endpoint(cls, request):
        return super().check_token_endpoint(request) and _assertion_type(request) == ID_JAG_TYPE

    def _process_assertion_claims(self, assertion):
        claims = self._verified(assertion, [self.ctx.issuer], essential=("client_id",))
        self._check_confirmation(claims.get("cnf"))
        return claims

    def check_jti(self, claims, jti):
        return True  # recorded by _verified, in this request's transaction

    def _check_confirmation(self, cnf: object) -> None:
        """Draft section 9.11: a ``cnf`` the AS cannot check is refused; DPoP ``jkt`` it can."""
        if cnf is None:
            return
        if not isinstance(cnf, dict) or set(cnf) != {"jkt"} or not isinstance(cnf["jkt"], str):
            raise InvalidGrantError("the ID-JAG's 'cnf' uses a confirmation method this server does not support (only DPoP 'jkt')")
        if self.dpop_jkt != cnf["jkt"]:
            raise InvalidGrantError("the ID-JAG is bound to a DPoP key (cnf.jkt): send a DPoP proof signed with that key")

    def _resolve_scope(self, claims):
        resource = self._resource(claims.get("resource"))
        self.request.gatehouse_resource = resource
        return self._scopes(resource, claims.get("scope"))

    def authenticate_user(self, subject):
        claims = self.request.id_jag_claims
        idp = self.idp
        if idp.users == "existing":
            username = claims.get(idp.username_claim)
            user = active_user_named(self.db, username) if isinstance(username, str) else None
            if user is None:
                raise InvalidGrantError(describable(
                    f"no enabled local account is named by the ID-JAG's {idp.username_claim!r}; an administrator must create it"
                ))
            return user
        username = f"{idp.label}:{subject}"
        if len(username) > 255:
            raise InvalidGrantError("the ID-JAG's 'sub' is too long for an account name")
        display = claims.get("name") or claims.get("email")
        user = provisioned_user(self.db, username, display[:255] if isinstance(display, str) else None)
        if user is None:
            raise InvalidGrantError("the account of this ID-JAG's subject is disabled here")
        return user

    def check_id_jag_permission(self, client, user, scopes):
        if self.idp.clients and client.client_id not in self.idp.clients:
            raise InvalidGrantError(describable(f"{self.idp.issuer} is not trusted to vouch for the client {client.client_id}"))
        return True

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=False):
        client = self.request.client
        resource = self.request.gatehouse_resource
        grant_row = new_grant(self.db, client_id=client.client_id, user_id=user.id, grant_type=JWT_BEARER, scope=scope,
                              resource=resource.uri)
        self.db.flush()
        audit.record(self.db, audit.TOKEN_ISSUED, client_id=client.client_id, user_id=user.id, grant_id=grant_row.id,
                     grant_type=JWT_BEARER, resource=resource.uri, scope=scope, assertion_issuer=self.idp.issuer)
        return self._issue(grant_row, user, scope, resource, False)


@dataclass(frozen=True)
class _Workload:
    """The workload named by a workload JWT: the client of the grant and the subject of its token."""

    issuer: str
    subject: str

    def check_grant_type(self, grant_type):
        return grant_type == JWT_BEARER


def subject_allowed(patterns: list[str], subject: str) -> bool:
    """``subjects`` rules: an exact value, or ``prefix*`` for every subject with that prefix."""
    return any(subject == p or (p.endswith("*") and subject.startswith(p[:-1])) for p in patterns)


class WorkloadIdentityGrant(_AssertionGrant, JWTBearerGrant):
    KIND = "workload"

    @classmethod
    def check_token_endpoint(cls, request):
        return super().check_token_endpoint(request) and _assertion_type(request) != ID_JAG_TYPE

    def process_assertion_claims(self, assertion):
        return self._verified(assertion, [self.ctx.issuer, f"{self.ctx.issuer}/token"])

    def resolve_issuer_client(self, issuer):
        return _Workload(issuer, "")

    def authenticate_user(self, subject):
        if not subject_allowed(self.idp.subjects, subject):
            raise InvalidGrantError(describable(f"the workload {subject!r} may not get tokens from this server"))
        return _Workload(self.idp.issuer, subject)

    def has_granted_permission(self, client, user):
        return True

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=False):
        resource = self._resource()
        scope = self._scopes(resource)
        workload = user.subject
        grant_row = new_grant(self.db, client_id=workload, user_id=None, grant_type=JWT_BEARER, scope=scope, resource=resource.uri)
        self.db.flush()
        audit.record(self.db, audit.TOKEN_ISSUED, client_id=workload, grant_id=grant_row.id, grant_type=JWT_BEARER,
                     resource=resource.uri, scope=scope, assertion_issuer=self.idp.issuer)
        return self.ctx.tokens.issue(
            self.db, grant_row.id, client_id=workload, subject=workload, scope=scope, resource=resource,
            include_refresh_token=False, jkt=self.dpop_jkt,
        )
