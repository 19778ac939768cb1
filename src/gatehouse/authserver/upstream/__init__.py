"""Sign-in through upstream identity providers (Google, Microsoft Entra ID, GitHub, any OpenID
provider) and the vault of the upstream tokens that sign-in yields (UP-1..UP-3).

- :mod:`.providers`: the configured providers, on Authlib's Starlette OAuth client.
- :mod:`.state`: the upstream leg's own ``state``, PKCE verifier and ``nonce``, in the store.
- :mod:`.login`: the routes that start the upstream sign-in and receive its callback.
- :mod:`.identities`: the local user linked to an (upstream issuer, subject).
- :mod:`.vault`: upstream tokens, encrypted, refreshed by the AS, never given to MCP clients.
"""
