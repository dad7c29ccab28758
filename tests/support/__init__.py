"""Helpers shared by test layers (factories, fake engines); not collected as tests."""
