"""Keys for a guard that runs in the same process as the Gatehouse AS (``gatehouse serve``)."""

from __future__ import annotations

from anyio import to_thread

from gatehouse.authserver.keys import KeyRing


class KeyRingSource:
    """The AS's own key ring as a verifier key source: no HTTP, the same rotation."""

    def __init__(self, keyring: KeyRing):
        self._keyring = keyring

    @property
    def generation(self) -> int:
        return self._keyring.generation

    async def key(self, kid: str):
        # the key ring may reload from the store: keep that off the event loop
        return await to_thread.run_sync(self._keyring.public_key, kid)
