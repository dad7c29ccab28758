"""Discord: ``client`` (discord.py commands and buttons in), ``outbox`` (posting, 413 plans,
the 15-minute token switch)."""
