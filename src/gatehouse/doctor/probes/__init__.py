"""The probes, one module per group of checks; each sends its requests through a shared
``Prober`` and turns the answers into ``Check``s."""
