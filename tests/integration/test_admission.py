"""Admission on both backends: allowlists, the shared token bucket, caps, position and ETA."""

from __future__ import annotations

import asyncio

import pytest

from gouache.bot.admission import DEFAULT_SECONDS_PER_IMAGE, WEB_GROUP, Admission
from gouache.config import Admission as Policy
from gouache.config import Settings
from gouache.errors import NotAllowed, QueueFull, RateLimited
from tests.support.factories import make_request


def _admission(storage, **policy) -> Admission:
    return Admission(storage, Policy(**{"rate_per_minute": 600, "burst": 100, **policy}))


async def test_token_bucket_refuses_with_retry_after_then_refills(storage):
    admission = _admission(storage, rate_per_minute=60, burst=2)
    await admission.admit(make_request(user="ann"))
    await admission.admit(make_request(user="ann"))
    with pytest.raises(RateLimited) as refused:
        await admission.admit(make_request(user="ann"))
    assert 0 < refused.value.retry_after <= 1.01
    assert "60 per minute" in refused.value.message and "bursts of 2" in refused.value.message
    assert "Try again in 1 s" in refused.value.message
    await admission.admit(make_request(user="bob"))  # buckets are per user
    await asyncio.sleep(refused.value.retry_after + 0.05)
    await admission.admit(make_request(user="ann"))


async def test_duplicate_request_ids_take_no_second_token(storage):
    admission = _admission(storage, rate_per_minute=1, burst=2)
    first = await admission.admit(make_request(user="ann", request_id="evt-1"))
    for _ in range(5):  # the platform re-delivers the same event
        again = await admission.admit(make_request(user="ann", request_id="evt-1"))
        assert again.job.id == first.job.id and again.created is False
    second = await admission.admit(make_request(user="ann", request_id="evt-2"))
    assert second.created
    with pytest.raises(RateLimited):
        await admission.admit(make_request(user="ann", request_id="evt-3"))


async def test_bot_processes_share_one_bucket(storage, open_more):
    other = await open_more()
    one, two = _admission(storage, rate_per_minute=1, burst=3), _admission(other, rate_per_minute=1, burst=3)
    results = await asyncio.gather(
        *(a.admit(make_request(user="ann")) for a in (one, two, one, two, one, two)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert all(isinstance(r, RateLimited) for r in results if isinstance(r, BaseException))


async def test_per_user_pending_cap(storage):
    admission = _admission(storage, max_pending_per_user=2)
    await admission.admit(make_request(user="ann"))
    await admission.admit(make_request(user="ann"))
    with pytest.raises(QueueFull) as refused:
        await admission.admit(make_request(user="ann"))
    assert "limit is 2" in refused.value.message
    await admission.admit(make_request(user="bob"))
    [job] = await storage.claim_batch("w", 1, 30)  # running still counts as pending
    await storage.complete(job.id, "w", [])
    await admission.admit(make_request(user="ann"))


async def test_global_queue_cap(storage):
    admission = _admission(storage, max_queue=3)
    for user in "abc":
        await admission.admit(make_request(user=user, platform="cli"))
    with pytest.raises(QueueFull) as refused:
        await admission.admit(make_request(user="d", platform="cli"))
    assert "at most 3" in refused.value.message


async def test_refusal_takes_no_token(storage):
    admission = _admission(storage, rate_per_minute=1, burst=1, max_queue=1)
    await admission.admit(make_request(user="a"))
    for _ in range(3):
        with pytest.raises(QueueFull):
            await admission.admit(make_request(user="b"))
    [job] = await storage.claim_batch("w", 1, 30)
    await admission.admit(make_request(user="b"))  # b's only token is still there


@pytest.mark.parametrize(
    ("policy", "origin", "allowed"),
    [
        ({}, {"platform": "discord", "guild": "g9", "channel": "c9"}, True),
        ({"allowed_guilds": ["g1"]}, {"platform": "discord", "guild": "g1"}, True),
        ({"allowed_guilds": ["g1"]}, {"platform": "discord", "guild": "g2"}, False),
        ({"allowed_guilds": ["g1"]}, {"platform": "discord", "guild": ""}, False),
        ({"allowed_guilds": ["g1"]}, {"platform": "slack", "guild": "T9"}, True),
        ({"allowed_workspaces": ["T1"]}, {"platform": "slack", "guild": "T9"}, False),
        ({"allowed_channels": ["c1"]}, {"platform": "slack", "guild": "T1", "channel": "c2"}, False),
        ({"allowed_channels": ["c1"]}, {"platform": "discord", "guild": "g", "channel": "c1"}, True),
        ({"allowed_channels": ["c1"]}, {"platform": "web", "channel": ""}, True),
    ],
)
async def test_allowlists(storage, policy, origin, allowed):
    admission = _admission(storage, **policy)
    request = make_request(**origin)
    if allowed:
        assert (await admission.admit(request)).created
    else:
        with pytest.raises(NotAllowed):
            await admission.admit(request)
        assert await storage.list_jobs() == []


async def test_position_and_eta_from_recent_throughput(storage):
    admission = _admission(storage)
    first = await admission.admit(make_request(user="ann", count=2))
    assert first.position == 1 and first.eta_seconds == pytest.approx(2 * DEFAULT_SECONDS_PER_IMAGE)
    assert "next in line" in first.message
    [job] = await storage.claim_batch("w", 2, 30)
    await asyncio.sleep(0.4)
    await storage.complete(job.id, "w", [])  # about 0.2 s per image
    second = await admission.admit(make_request(user="bob"))
    third = await admission.admit(make_request(user="cid", count=3))
    assert (second.position, third.position) == (1, 2)
    # From the measured 0.2 s per image, not the default (a slow machine only measures more).
    assert second.eta_seconds > 0.15 and second.eta_seconds != pytest.approx(DEFAULT_SECONDS_PER_IMAGE)
    assert third.eta_seconds == pytest.approx(4 * second.eta_seconds, rel=0.01)


async def test_per_guild_pending_cap_beside_the_per_user_one(storage):
    """Ten people in one guild cannot fill the queue for every other guild."""
    admission = _admission(storage, max_pending_per_guild=3, max_pending_per_user=5)
    for user in ("ann", "bob", "cid"):
        await admission.admit(make_request(user=user, platform="discord", guild="g1"))
    with pytest.raises(QueueFull) as refused:
        await admission.admit(make_request(user="dan", platform="discord", guild="g1"))
    assert "This server already has 3 requests" in refused.value.message
    await admission.admit(make_request(user="dan", platform="discord", guild="g2"))
    for _ in range(4):  # DMs and the web have no guild: only the per-user cap applies
        await admission.admit(make_request(user="eve", platform="web", guild=""))


# --- the web group and per-platform shares ----------------------------------------------------


async def test_anonymous_web_users_share_the_groups_pending_cap(storage):
    """However many identities one client collects, the web group's cap holds; a named
    [web.users] person (no group) and Discord are not held by it."""
    admission = _admission(storage, max_pending_per_guild=3, max_pending_per_user=5)
    for user in ("web:a", "web:b", "web:c"):
        await admission.admit(make_request(user=user, platform="web", guild=WEB_GROUP))
    with pytest.raises(QueueFull) as refused:
        await admission.admit(make_request(user="web:d", platform="web", guild=WEB_GROUP))
    assert "web playground's guests already have 3" in refused.value.message
    await admission.admit(make_request(user="web:user:kim", platform="web", guild=""))
    await admission.admit(make_request(user="ann", platform="discord", guild="g1"))


async def test_anonymous_web_users_share_one_rate_bucket(storage, tmp_path):
    settings = Settings(data_dir=tmp_path, admission={"rate_per_minute": 600, "burst": 100},
                        web={"group_rate_per_minute": 1, "group_burst": 2})  # fmt: skip
    admission = Admission(storage, settings)
    for user in ("web:a", "web:b"):
        await admission.admit(make_request(user=user, platform="web", guild=WEB_GROUP))
    with pytest.raises(RateLimited) as refused:
        await admission.admit(make_request(user="web:c", platform="web", guild=WEB_GROUP))
    assert "guests are sending requests faster" in refused.value.message
    assert refused.value.retry_after > 1
    await admission.admit(make_request(user="web:user:kim", platform="web", guild=""))
    with pytest.raises(RateLimited):  # the refusal took no token from web:c's own bucket...
        await admission.admit(make_request(user="web:c", platform="web", guild=WEB_GROUP))
    await storage.reset_rate_limit("group:web")  # ...and the group's is shared, not web:c's
    await admission.admit(make_request(user="web:c", platform="web", guild=WEB_GROUP))


async def test_the_web_cannot_lock_chat_platforms_out_of_the_queue(storage):
    admission = _admission(storage, max_queue=4, queue_shares={"web": 0.5})
    for user in ("web:a", "web:b"):
        await admission.admit(make_request(user=user, platform="web", guild=WEB_GROUP))
    with pytest.raises(QueueFull) as refused:
        await admission.admit(make_request(user="web:user:kim", platform="web"))
    assert "the web playground already fill their share" in refused.value.message
    await admission.admit(make_request(user="ann", platform="discord", guild="g1"))
    await admission.admit(make_request(user="bo", platform="slack", guild="T1"))
    with pytest.raises(QueueFull) as full:
        await admission.admit(make_request(user="cy", platform="slack", guild="T1"))
    assert "at most 4" in full.value.message


def test_queue_shares_must_be_fractions():
    with pytest.raises(ValueError, match="queue_shares"):
        Policy(queue_shares={"web": 1.5})
    assert Policy(max_queue=500).queue_cap("web") == 250
    assert Policy(max_queue=500).queue_cap("discord") == 500


async def _age_buckets(storage, seconds: float) -> None:
    """Move every rate bucket's last use ``seconds`` into the past (straight in the database)."""
    if storage.url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(storage.url.removeprefix("sqlite:///")) as db:
            db.execute("UPDATE rate_buckets SET updated_at = updated_at - ?", (seconds,))
    else:
        import asyncpg

        conn = await asyncpg.connect(storage.url)
        try:
            await conn.execute("UPDATE rate_buckets SET updated_at = updated_at - "
                               "make_interval(secs => $1)", float(seconds))  # fmt: skip
        finally:
            await conn.close()


async def _has_bucket(storage, users: list[str]) -> set[str]:
    """Which of ``users`` still have a bucket row (reading it deletes it: ``reset_rate_limit``)."""
    return {user for user in users if await storage.reset_rate_limit(user)}


async def test_stale_rate_buckets_are_pruned(storage):
    """A bucket idle long enough to have refilled is the same as none: it is deleted, so a
    flood of one-off identities leaves no row per identity behind."""
    admission = _admission(storage, rate_per_minute=60, burst=5)
    for n in range(3):
        await admission.admit(make_request(user=f"one-{n}", platform="cli"))
    await _age_buckets(storage, 2 * 3600)
    await admission.admit(make_request(user="late", platform="cli"))
    assert await _has_bucket(storage, ["one-0", "one-1", "one-2", "late"]) == {"late"}
async def test_no_running_worker_still_queues_but_says_so(storage):
    from gouache.bot.generator import GeneratorWatch
    from gouache.config import Settings

    watch = GeneratorWatch(Settings(), restarts=lambda: 3)
    admission = Admission(storage, Policy(rate_per_minute=600, burst=100), watch=watch)
    waiting = await admission.admit(make_request(user="ann"))
    assert waiting.created and waiting.position == 1  # queued all the same: nothing is lost
    assert waiting.eta_seconds is None and waiting.generator_running is False
    assert "generator isn't running" in waiting.message and "ready in" not in waiting.message
    await storage.worker_seen("w-1")
    served = await admission.admit(make_request(user="bob"))
    assert served.generator_running and served.eta_seconds is not None
    assert "ready in about" in served.message
