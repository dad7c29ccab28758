"""The web edge probed as an attacker would, in one process over real HTTP: identities that
cannot be minted or forged, the Host and Origin rules, no 500 for any malformed input, bounded
bodies and streams, tokens, links and ownership."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, DummyCookieJar

from gouache.bot.links import ArtifactLinks
from tests.integration.test_web import Stack, _settings, _submit

TOKEN = "edge-master-token-1234"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(_settings(tmp_path)) as running:
        yield running


async def raw(stack: Stack, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One request written byte for byte (aiohttp's client refuses non-ASCII headers)."""
    reader, writer = await asyncio.open_connection(stack.server.host, stack.server.port)
    try:
        writer.write(head.replace(b"\n", b"\r\n") + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _cookieless(stack: Stack) -> ClientSession:
    return ClientSession(base_url=str(stack.server.make_url("/")), cookie_jar=DummyCookieJar())


async def test_a_cookieless_flood_is_one_user(tmp_path: Path) -> None:
    """700 cookie-less posts were 489 identities: now every unrecognised post from one address
    is that address's one user, held by the per-user rate limit."""
    settings = _settings(tmp_path, admission={"rate_per_minute": 1, "burst": 2})
    async with Stack(settings) as stack, _cookieless(stack) as flood:
        statuses = []
        for n in range(20):
            response = await flood.post("/api/jobs", json={"command": f"/imagine flood {n}"})
            statuses.append(response.status)
        assert statuses.count(202) == 2 and statuses.count(429) == 18
        fresh = [(await flood.get("/")).cookies.get("gouache_user") for _ in range(5)]
        # the address's burst is 3 ids: the stack's own page load took one, two are left, then
        # every further client from this address is given the address's id
        assert len({c.value for c in fresh if c is not None}) == 3
        assert await _submit(stack.client, "/imagine a cookied user still gets in")


async def test_a_forged_user_cookie_reaches_nobodys_jobs(stack: Stack) -> None:
    mine = await _submit(stack.client, "/imagine mine")
    job = await stack.storage.get_job(mine["id"])
    victim = job.request.origin.user
    assert victim.startswith("web:")
    async with ClientSession(base_url=str(stack.server.make_url("/"))) as forger:
        for value in (victim, victim + ".forged-signature", f"{victim}.{'A' * 22}"):
            forger.cookie_jar.update_cookies({"gouache_user": value})
            listed = await (await forger.get("/api/jobs")).json()
            assert listed["jobs"] == []
            assert (await forger.post(f"/api/jobs/{mine['id']}/cancel")).status == 403


async def test_dns_rebinding_host_is_refused_without_a_token(stack: Stack) -> None:
    evil = {"Host": "attacker.example", "Origin": "http://attacker.example"}
    assert (await stack.client.post("/api/jobs", json={"command": "/imagine x"}, headers=evil)).status == 421
    refused = await stack.client.get("/metrics", headers={"Host": "attacker.example"})
    assert refused.status == 421 and "error" in await refused.json()
    for host in ("localhost:8080", "127.0.0.1", "[::1]:9"):
        assert (await stack.client.get("/healthz", headers={"Host": host})).status in (200, 503)


async def test_with_a_token_the_public_origin_may_write(tmp_path: Path) -> None:
    settings = _settings(tmp_path, host="0.0.0.0", web={"token": TOKEN, "public_url": "https://art.example"})
    async with Stack(settings) as stack:
        auth = {"Authorization": f"Bearer {TOKEN}", "Host": "10.0.0.5:8080"}
        ok = await stack.client.post("/api/jobs", json={"command": "/imagine a"},
                                     headers={**auth, "Origin": "https://art.example"})  # fmt: skip
        assert ok.status == 202, await ok.text()
        cross = await stack.client.post("/api/jobs", json={"command": "/imagine b"},
                                        headers={**auth, "Origin": "https://evil.example"})  # fmt: skip
        assert cross.status == 403


@pytest.mark.parametrize("with_token", [False, True])
async def test_non_ascii_secrets_are_a_4xx_not_a_500(tmp_path: Path, with_token: bool) -> None:
    web = {"token": TOKEN} if with_token else {}
    async with Stack(_settings(tmp_path, web=web, host="0.0.0.0" if with_token else "127.0.0.1")) as stack:
        host = b"Host: 127.0.0.1\n"
        cases = [
            b"GET /api/jobs HTTP/1.1\n" + host + "Authorization: Bearer tökén\n".encode() + b"Connection: close\n",
            b"GET /api/jobs HTTP/1.1\n" + host + "Cookie: gouache_session=ü; gouache_user=wéb:x.ü\n".encode()
            + b"Connection: close\n",
            b"GET /?token=%C3%BC HTTP/1.1\n" + host + b"Connection: close\n",
            b"GET /files/j/x.png?exp=%C3%BC&sig=%C3%BC HTTP/1.1\n" + host + b"Connection: close\n",
            b"GET /files/j/x.png?exp=99999999999&sig=%C3%BC HTTP/1.1\n" + host + b"Connection: close\n",
        ]
        for head in cases:
            status, body = await raw(stack, head)
            assert 400 <= status < 500 or (status == 200 and not with_token), (head, status, body)


MALFORMED: list[tuple[str, dict[str, str], bytes]] = [
    ("nested JSON", {"Content-Type": "application/json"}, b"[" * 5000 + b"]" * 5000),
    ("bogus charset", {"Content-Type": "application/json; charset=no-such-codec"}, b'{"command": "/imagine x"}'),
    ("not UTF-8", {"Content-Type": "application/json"}, b'{"command": "\xff\xfe"}'),
    ("no boundary", {"Content-Type": "multipart/form-data"}, b"--x\r\n\r\n"),
    ("truncated multipart", {"Content-Type": "multipart/form-data; boundary=b"},
     b'--b\r\nContent-Disposition: form-data; name="command"\r\n\r\n/imagine x'),
    ("unknown part", {"Content-Type": "multipart/form-data; boundary=b"},
     b'--b\r\nContent-Disposition: form-data; name="junk"\r\n\r\nx\r\n--b--\r\n'),
    ("two commands", {"Content-Type": "multipart/form-data; boundary=b"},
     b'--b\r\nContent-Disposition: form-data; name="command"\r\n\r\n/imagine x\r\n'
     b'--b\r\nContent-Disposition: form-data; name="command"\r\n\r\n/imagine y\r\n--b--\r\n'),
    ("bad transfer encoding", {"Content-Type": "multipart/form-data; boundary=b"},
     b'--b\r\nContent-Disposition: form-data; name="command"\r\nContent-Transfer-Encoding: rot13\r\n'
     b'\r\n/imagine x\r\n--b--\r\n'),
    ("big command", {"Content-Type": "application/json"}, json.dumps({"command": "/imagine " + "a" * 5000}).encode()),
    ("big JSON", {"Content-Type": "application/json"}, b'{"pad": "' + b"a" * 20000 + b'"}'),
    ("big multipart", {"Content-Type": "multipart/form-data; boundary=b"},
     b"".join(b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + b"x" * 1024 + b"\r\n" for _ in range(60))),
]  # fmt: skip


@pytest.mark.parametrize(("case", "headers", "body"), MALFORMED, ids=[c[0] for c in MALFORMED])
async def test_malformed_bodies_are_4xx_json(
    stack: Stack, case: str, headers: dict[str, str], body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    response = await stack.client.post("/api/jobs", data=body, headers=headers)
    assert 400 <= response.status < 500, (case, response.status, await response.text())
    assert "error" in await response.json()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_command_is_refused_by_size_before_parsing(stack: Stack) -> None:
    refused = await stack.client.post("/api/jobs", json={"command": "/imagine " + "--n 4 " * 1000})
    assert refused.status == 413 and "at most 4096 bytes" in (await refused.json())["error"]


async def test_event_streams_are_capped_and_share_one_poller(tmp_path: Path) -> None:
    settings = _settings(tmp_path, web={"max_streams_per_user": 3, "max_streams": 4})
    async with Stack(settings) as stack:
        job = await _submit(stack.client, "/imagine a slow one")
        url = f"/api/jobs/{job['id']}/events"
        streams = [await stack.client.get(url) for _ in range(3)]
        assert all(s.status == 200 for s in streams)
        for s in streams:
            assert (await s.content.readuntil(b"\n\n")).startswith(b"event: status")
        assert stack.adapter._streams.pollers == 1 and stack.adapter._streams.open_streams == 3
        over_user = await stack.client.get(url)
        assert over_user.status == 429 and "Retry-After" in over_user.headers
        async with stack.browser() as other:
            assert (await other.get(url)).status == 200  # another user: the 4th in total
            assert (await other.get(url)).status == 429  # past the total cap
        for s in streams:
            s.close()
        stack.start_worker()
        fresh = await stack.client.get(url)
        assert fresh.status == 200
        body = await asyncio.wait_for(fresh.text(), 30)
        assert "event: done" in body


async def test_the_token_cookie_holds_a_session_not_the_token(tmp_path: Path) -> None:
    settings = _settings(tmp_path, host="0.0.0.0", web={"token": TOKEN, "public_url": "https://art.example"})
    async with Stack(settings) as stack:
        landing = await stack.client.get(f"/?token={TOKEN}", allow_redirects=False)
        assert landing.status == 302
        header = landing.headers["Set-Cookie"]
        assert header.startswith("__Host-gouache_session=") and "Secure" in header
        value = header.split(";", 1)[0].split("=", 1)[1]
        assert TOKEN not in header and value
        ok = await stack.client.get("/api/jobs", headers={"Cookie": f"__Host-gouache_session={value}"})
        assert ok.status == 200
        raw_token = await stack.client.get("/api/jobs", headers={"Cookie": f"__Host-gouache_session={TOKEN}"})
        assert raw_token.status == 401


async def test_named_web_users_have_their_own_identity(tmp_path: Path) -> None:
    settings = _settings(tmp_path, host="0.0.0.0", web={"token": TOKEN, "users": {"kim": "kims-own-token-99"}})
    async with Stack(settings) as stack:
        made = await _submit(stack.client, "/imagine kim's", headers={"Authorization": "Bearer kims-own-token-99"})
        job = await stack.storage.get_job(made["id"])
        assert job.request.origin.user == "web:user:kim" and job.request.origin.guild == ""


async def test_wrong_tokens_are_throttled_per_address(tmp_path: Path) -> None:
    settings = _settings(tmp_path, host="0.0.0.0",
                         web={"token": TOKEN, "failed_token_attempts_per_minute": 3})  # fmt: skip
    async with Stack(settings) as stack:
        wrong = [(await stack.client.get("/api/jobs", headers={"Authorization": f"Bearer guess-{n}"})).status
                 for n in range(5)]  # fmt: skip
        assert wrong == [401, 401, 401, 429, 429]
        right = await stack.client.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status == 429 and int(right.headers["Retry-After"]) >= 1


def test_signed_links_expire(tmp_path: Path) -> None:
    now = [1_000_000.0]
    links = ArtifactLinks("https://art.example", b"k" * 32, ttl_seconds=60, clock=lambda: now[0])
    url = links.url("job-1", "image-0.png")
    assert url is not None
    query = dict(part.split("=") for part in url.split("?", 1)[1].split("&"))
    assert links.verify("job-1", "image-0.png", query["sig"], query["exp"])
    assert not links.verify("job-1", "image-0.png", query["sig"], str(int(query["exp"]) + 3600))
    assert not links.verify("job-2", "image-0.png", query["sig"], query["exp"])
    now[0] += 61
    assert not links.verify("job-1", "image-0.png", query["sig"], query["exp"])


async def test_actions_only_by_the_jobs_owner(stack: Stack) -> None:
    stack.start_worker()
    source = await _submit(stack.client, "/imagine a lighthouse --seed 7")
    for _ in range(300):
        if (await (await stack.client.get(f"/api/jobs/{source['id']}")).json())["status"] == "succeeded":
            break
        await asyncio.sleep(0.1)
    async with stack.browser() as other:
        refused = await other.post(f"/api/jobs/{source['id']}/actions/reroll")
        assert refused.status == 403 and "Only the person" in (await refused.json())["error"]
    assert (await stack.client.post(f"/api/jobs/{source['id']}/actions/reroll")).status == 202


async def test_idempotency_keys_are_bound_to_endpoint_and_body(stack: Stack) -> None:
    key = {"Idempotency-Key": "k-1"}
    first = await _submit(stack.client, "/imagine one", headers=key)
    again = await stack.client.post("/api/jobs", json={"command": "/imagine one"}, headers=key)
    assert again.status == 200 and (await again.json())["id"] == first["id"]
    other = await stack.client.post("/api/jobs", json={"command": "/imagine two"}, headers=key)
    assert other.status == 422 and "different request" in (await other.json())["error"]
    long_key = await stack.client.post("/api/jobs", json={"command": "/imagine one"},
                                       headers={"Idempotency-Key": "k" * 101})  # fmt: skip
    assert long_key.status == 400
    assert len(await stack.storage.list_jobs()) == 1


async def test_the_database_is_private(stack: Stack) -> None:
    db = stack.settings.data_dir / "gouache.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for side in (db.with_name("gouache.db-wal"), db.with_name("gouache.db-shm")):
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0
