"""Client options for the conformance harness's extension scenarios, as a user would configure them.

``tests/conformance/client.py`` calls ``options_for(scenario, context)`` with the scenario name
and ``MCP_CONFORMANCE_CONTEXT``; ``None`` leaves the scenario to its defaults. ``storage_dir``
stays ``None``: client.py supplies the run's temporary store.

- ``auth/dpop``, ``auth/dpop-nonce``: an interactive client signing in headlessly with DPoP
  required (RFC 9449; the harness's AS advertises ES256 anyway, so the default would use it too).
- ``auth/wif-jwt-bearer``: workload identity federation with the context's ``valid_jwt``.
- ``auth/enterprise-managed-authorization``: the ID-JAG token exchange at the context's IdP
  (``idp_*``) with its ``idp_id_token``, then the jwt-bearer grant with ``client_id``/``client_secret``.
"""

from __future__ import annotations

from gatehouse.client.options import ClientOptions, EnterpriseIdp

DPOP_SCENARIOS = ("auth/dpop", "auth/dpop-nonce")


def options_for(scenario: str, context: dict) -> ClientOptions | None:
    if scenario in DPOP_SCENARIOS:
        return ClientOptions(dpop=True, headless=True, open_browser=False, login_timeout=20,
                             client_name="Gatehouse conformance client")
    if scenario == "auth/wif-jwt-bearer":
        return ClientOptions(client_id=context.get("client_id"), workload_token=context["valid_jwt"])
    if scenario == "auth/enterprise-managed-authorization":
        idp = EnterpriseIdp(
            issuer=context["idp_issuer"], client_id=context["idp_client_id"],
            id_token=context["idp_id_token"], token_endpoint=context.get("idp_token_endpoint"),
        )
        return ClientOptions(client_id=context["client_id"], client_secret=context["client_secret"], enterprise_idp=idp)
    return None
