"""Slack: ``app`` (listeners), ``http`` (signed requests), ``socket`` (Socket Mode), ``modal``
(/depth), ``threads`` (posting), ``files`` (downloads), ``budget``, ``blocks``, ``replies``."""
