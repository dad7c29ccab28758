"""Local fake servers that speak the real platform protocols, so the real SDKs run in tests."""
