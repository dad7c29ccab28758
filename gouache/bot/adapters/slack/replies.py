"""Every Slack-only sentence a user can see, in one place (bolt's ``logger/messages.py`` habit).

Platform-neutral texts (queued, cancelled, errors) stay in ``gouache.messages``; these are the
ones only Slack needs: files that cannot be read, the bot missing from a channel, the modal.
"""

from __future__ import annotations

__all__ = [
    "NOT_A_SLACK_FILE",
    "SIGN_IN_PAGE",
    "NO_IMAGE_ON_MESSAGE",
    "MODAL_TITLE",
    "MODAL_TITLES",
    "OPTION_HINTS",
    "ATTACH_DEPTH",
    "ATTACH_IMAGE",
    "file_label",
    "chosen_file",
    "download_failed",
    "truncated",
    "invite_me",
    "gave_up",
    "sent_by_dm",
]

NOT_A_SLACK_FILE = "I can only read files uploaded to Slack."
SIGN_IN_PAGE = (
    "Slack sent me its sign-in page instead of your file: the app needs the files:read "
    "scope. Ask a workspace admin to reinstall it from the manifest."
)
NO_IMAGE_ON_MESSAGE = "That message has no image I can use: pick one with a PNG, JPEG or WEBP."
MODAL_TITLE = "Depth map"
MODAL_TITLES = {"depth": MODAL_TITLE, "imagine": "Remix an image", "upscale": "Upscale",
                "edit": "Edit an image"}  # fmt: skip
OPTION_HINTS = {"depth": "--steps 20 --guidance 6 --seed 7", "imagine": "--strength 0.6 --seed 7",
                "upscale": "--scale 2 --strength 0.35", "edit": "--seed 7"}  # fmt: skip
ATTACH_DEPTH = "Attach a depth map or photo."
ATTACH_IMAGE = "Attach an image (PNG, JPEG or WEBP)."


def file_label(depth: bool) -> str:
    return "Depth map or photo" if depth else "Image"


def chosen_file(name: str, depth: bool) -> str:
    return f"{'Depth map' if depth else 'Image'}: *{name}* from that message."



def download_failed(status: int | None) -> str:
    why = f" (Slack answered {status})" if status else ""
    return f"I could not download your file{why}. Please try again."


def truncated(got: int | None, expected: int | None) -> str:
    if got is not None and expected is not None:
        return (f"Your file arrived incomplete ({got:,} of {expected:,} bytes), so I did not use "
                "it. Please try again.")  # fmt: skip
    return "Your file arrived incomplete, so I did not use it. Please try again."


def invite_me(channel: str) -> str:
    return (f"I'm not a member of <#{channel}>, so I can't post there. Invite me with "
            "`/invite @gouache` in that channel (or add me from the channel's details).")  # fmt: skip


def sent_by_dm(channel: str) -> str:
    return invite_me(channel) + " Until then I'll send your results here, in a direct message."


def gave_up(prompt: str, reason: str) -> str:
    return (f"I finished “{prompt}” but could not post the results ({reason}). "
            "Please try again, or ask an admin to check the bot's access to the channel.")  # fmt: skip
