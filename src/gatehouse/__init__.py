"""Gatehouse: real OAuth in front of Model Context Protocol servers."""

__version__ = "0.1.0"
