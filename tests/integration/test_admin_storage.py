"""Admin state on both backends: the shared pause flag, rate-limit resets, usage, queue views."""

from __future__ import annotations

import pytest

from gouache import messages
from gouache.bot.actions import ButtonActions
from gouache.bot.admin import Actor, AdminActions
from gouache.bot.admission import PAUSED_FLAG, Admission
from gouache.bot.queue_view import QueueView
from gouache.config import Admission as AdmissionSettings
from gouache.config import Limits, Settings
from gouache.errors import NotAllowed, NotFound, QueuePaused, RateLimited
from gouache.request import Kind, Origin, Request
from gouache.storage import JobStatus, Storage
from tests.integration.conftest import OpenStorage

ADMIN = Actor("admin-1")
ROLE_ADMIN = Actor("someone", frozenset({"role-9"}))


def _settings(**admission: object) -> Settings:
    fields: dict[str, object] = dict(rate_per_minute=600, burst=50, admin_users=["admin-1"],
                                     admin_roles=["role-9"])  # fmt: skip
    return Settings(admission=AdmissionSettings(**{**fields, **admission}), limits=Limits())


def _request(user: str, n: int, *, steps: int = 10, count: int = 1, guild: str = "g1") -> Request:
    origin = Origin("discord", f"{user}-{n}", user, channel="c1", guild=guild)
    return Request(kind=Kind.IMAGINE, prompt=f"prompt {n}", origin=origin, model="builtin:tiny",
                   width=64, height=64, steps=steps, guidance=5.0, sampler="ddim", seed=n,
                   count=count)  # fmt: skip


async def test_the_pause_is_shared_by_every_bot_process(
    storage: Storage, open_more: OpenStorage
) -> None:
    other = await open_more()  # another bot process on the same database
    admin = AdminActions(storage, _settings())
    assert await admin.pause(ROLE_ADMIN) == messages.paused()
    flag = await other.get_flag(PAUSED_FLAG)
    assert flag is not None and flag.updated_by == "someone" and flag.updated_at is not None
    with pytest.raises(QueuePaused, match="paused by an admin"):
        await Admission(other, _settings()).admit(_request("u1", 1))
    assert await other.list_jobs() == []
    assert await AdminActions(other, _settings()).resume(ADMIN) == messages.resumed()
    assert await storage.get_flag(PAUSED_FLAG) is None
    assert (await Admission(storage, _settings()).admit(_request("u1", 1))).created
    assert await storage.set_flag("nothing-here", None) is False


async def test_admin_actions_refuse_non_admins(storage: Storage) -> None:
    admin = AdminActions(storage, _settings())
    nobody = Actor("u1", frozenset({"role-1"}))
    for action in (admin.pause(nobody), admin.resume(nobody),
                   admin.reset_limits(nobody, "u2", "u2"), admin.usage(nobody)):  # fmt: skip
        with pytest.raises(NotAllowed, match="Only gouache admins"):
            await action
    assert await storage.get_flag(PAUSED_FLAG) is None


async def test_reset_limits_forgets_the_bucket(storage: Storage) -> None:
    settings = _settings(rate_per_minute=0.01, burst=1)
    admission = Admission(storage, settings)
    await admission.admit(_request("u1", 1))
    with pytest.raises(RateLimited):
        await admission.admit(_request("u1", 2))
    admin = AdminActions(storage, settings)
    assert await admin.reset_limits(ADMIN, "u1", "u1") == "Rate limit reset for u1."
    await admission.admit(_request("u1", 2))
    assert await storage.reset_rate_limit("nobody") is False


async def test_usage_counts_jobs_and_image_steps_per_user_and_guild(storage: Storage) -> None:
    await storage.enqueue(_request("u1", 1, steps=10, count=2))
    await storage.enqueue(_request("u1", 2, steps=5))
    await storage.enqueue(_request("u2", 3, steps=4, guild="g2"))
    rows = await storage.usage(3600)
    assert [(r.user, r.guild, r.jobs, r.image_steps) for r in rows] == [
        ("u1", "g1", 2, 25), ("u2", "g2", 1, 4)]  # fmt: skip
    text = await AdminActions(storage, _settings()).usage(ADMIN)
    assert "- u1: 2 job(s), 25 image-steps" in text
    assert "- discord guild g2 (all users): 1 job(s), 4 image-steps" in text


async def test_queue_view_lists_positions_and_cancels_the_newest(storage: Storage) -> None:
    view = QueueView(storage, ButtonActions(storage, Limits()), default_seconds_per_image=2.0)
    first, _ = await storage.enqueue(_request("u1", 1))
    await storage.enqueue(_request("u2", 2))
    newest, _ = await storage.enqueue(_request("u1", 3, count=2))
    [running] = await storage.claim_batch("w1", 1, 60.0)
    assert running.id == first.id
    entries = await view.entries("u1")
    assert [(e.job.id, e.position) for e in entries] == [(first.id, 0), (newest.id, 2)]
    assert entries[1].eta_seconds == pytest.approx(3 * 2.0)  # u2's image and both of its own
    text, _ = await view.render("u1")
    assert text.splitlines()[1].startswith("- running, about")
    assert (await view.cancel("u1")).id == newest.id
    assert (await storage.get_job(newest.id)).status is JobStatus.CANCELLED
    assert (await view.cancel("u1")).cancel_requested  # the running one: asked to stop
    with pytest.raises(NotFound, match="nothing queued or running"):
        await view.cancel("u3")
