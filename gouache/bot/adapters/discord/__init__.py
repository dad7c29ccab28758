"""Discord: ``client`` (inbound: commands, buttons), ``commands`` (the slash command tree,
options and autocomplete), ``buttons`` (persistent buttons), ``admin`` (admin commands),
``outbox`` (posting, the 15-minute token switch), ``upload_plans`` (10 files and the upload
limit per message, 413 degradation), ``text`` (escaping, 2,000 characters), ``http``
(``api_base``, token redaction)."""
