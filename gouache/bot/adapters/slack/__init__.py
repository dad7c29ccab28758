"""Slack: ``app`` (slack-bolt listeners, signed HTTP), ``blocks`` (escaping, Block Kit)."""
