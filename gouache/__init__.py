"""gouache: a self-hosted image-generation bot for Discord and Slack.

Importing the package is cheap: it pulls in neither torch nor any chat SDK.
"""

from __future__ import annotations

from gouache.config import Settings
from gouache.errors import UserError
from gouache.request import Kind, Origin, Request

__version__ = "0.1.0"
__all__ = ["Kind", "Origin", "Request", "Settings", "UserError", "__version__"]
