"""The authorization server: Authlib's OAuth 2.1 core served by Starlette."""
