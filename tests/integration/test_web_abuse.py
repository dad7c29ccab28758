"""The abuse suite: each probe of the web edge replayed against a real `gouache run` on
loopback, without and with a token, in bounded loops. It counts requests per category, 500s
and the limits that held, and writes them to ``benchmarks/results/web_edge.json``.

What it asserts: no 500 anywhere, a cookie-less flood is one user, a rebinding Host is
refused, every malformed body is a 4xx, streams are capped, and no signature, token or user
id reaches the log. ``/healthz`` timings while a 10 MB command is sent are recorded, never
asserted (wall-clock figures belong in the results file).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout, DummyCookieJar

from tests.integration.test_service import Service
from tests.integration.test_web_edge import MALFORMED

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results" / "web_edge.json"
TOKEN = "abuse-suite-token-5678"


class Probe:
    """Counts what each category of request got back."""

    def __init__(self) -> None:
        self.tried: Counter[str] = Counter()
        self.statuses: dict[str, Counter[int]] = {}
        self.held: dict[str, bool] = {}
        self.timings: dict[str, float] = {}  # recorded, never asserted

    def record(self, category: str, status: int) -> int:
        self.tried[category] += 1
        self.statuses.setdefault(category, Counter())[status] += 1
        return status

    @property
    def server_errors(self) -> int:
        return sum(n for c in self.statuses.values() for s, n in c.items() if s >= 500 and s != 503)


async def _raw(base: str, head: bytes, body: bytes = b"") -> int:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.replace(b"\n", b"\r\n") + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    return int(data.split(b" ", 2)[1])


async def _abuse(base: str, probe: Probe, auth: dict[str, str]) -> None:
    timeout = ClientTimeout(total=60)
    async with ClientSession(base, cookie_jar=DummyCookieJar(), timeout=timeout) as s:
        # 1. a cookie-less flood: one address, one user
        accepted = 0
        for n in range(40):
            r = await s.post("/api/jobs", json={"command": f"/imagine flood {n} --n 4 --steps 60"},
                             headers=auth)  # fmt: skip
            accepted += probe.record("cookieless_flood", r.status) == 202
            flooder = r.cookies["gouache_user"].value  # the address's id, the same every time
        probe.held["cookieless_flood_is_one_user"] = accepted <= 5  # the default burst
        # 2. DNS rebinding (only refused without a token: a token is the gate then)
        r = await s.post("/api/jobs", json={"command": "/imagine x"},
                         headers={**auth, "Host": "attacker.example", "Origin": "http://attacker.example"})
        probe.record("dns_rebinding", r.status)
        if not auth:
            probe.held["rebinding_host_refused"] = r.status == 421
        # 3. non-ASCII secrets, forged links
        for head in (
            "GET /api/jobs HTTP/1.1\nHost: 127.0.0.1\nAuthorization: Bearer tökén\n".encode(),
            "GET /api/jobs HTTP/1.1\nHost: 127.0.0.1\nCookie: gouache_session=ü; gouache_user=ü\n".encode(),
            b"GET /?token=%C3%BC HTTP/1.1\nHost: 127.0.0.1\n",
            b"GET /files/j/x.png?exp=99999999999&sig=%C3%BC HTTP/1.1\nHost: 127.0.0.1\n",
            b"GET /files/j/x.png?exp=1&sig=00 HTTP/1.1\nHost: 127.0.0.1\n",
        ):
            probe.record("non_ascii_and_forged_secrets", await _raw(base, head))
        # 4. malformed bodies
        all_4xx = True
        for _, headers, body in MALFORMED:
            r = await s.post("/api/jobs", data=body, headers={**headers, **auth})
            all_4xx &= 400 <= probe.record("malformed_bodies", r.status) < 500
        probe.held["malformed_bodies_4xx"] = all_4xx
        # 5. streams: per-user cap
        mine = {**auth, "Cookie": f"gouache_user={flooder}"}
        r = await s.get("/api/jobs", headers=mine)
        jobs = (await r.json())["jobs"] if r.status == 200 else []
        probe.held["streams_capped_per_user"] = False
        if jobs:
            streams = []
            for _ in range(12):
                stream = await s.get(f"/api/jobs/{jobs[0]['id']}/events", headers=mine)
                probe.record("event_streams", stream.status)
                streams.append(stream)
            probe.held["streams_capped_per_user"] = sum(x.status == 200 for x in streams) <= 8
            for stream in streams:
                stream.close()
        # 6. a 10 MB command while /healthz is asked, with 200 event streams open (25 named
        # people, 8 streams each on a job of their own)
        held = await _open_streams(s, probe) if auth else []
        big = b'{"command": "/imagine ' + b"a" * 10_000_000 + b'"}'
        sender = asyncio.create_task(s.post("/api/jobs", data=big, headers={"Content-Type": "application/json", **auth}))
        times = []
        for _ in range(100):
            start = time.perf_counter()
            probe.record("healthz_during_big_body", (await s.get("/healthz")).status)
            times.append(time.perf_counter() - start)
            await asyncio.sleep(0.01)
        try:
            probe.record("big_command", (await sender).status)
        except OSError:  # refused by size and the connection closed mid-send: also a refusal
            probe.record("big_command", 413)
        times.sort()
        probe.timings["streams_open_during_healthz"] = len(held)
        probe.timings["healthz_ms_median"] = round(times[len(times) // 2] * 1000, 1)
        probe.timings["healthz_ms_p99"] = round(times[int(len(times) * 0.99) - 1] * 1000, 1)
        probe.timings["healthz_ms_max"] = round(times[-1] * 1000, 1)
        for stream in held:
            stream.close()


STREAM_USERS = {f"streamer{n:02d}": f"streamer-token-{n:02d}-abcdef" for n in range(25)}


async def _open_streams(s: ClientSession, probe: Probe) -> list[Any]:
    """Up to 8 event streams for each named person, on a job of their own (200 in all)."""
    held = []
    for token in STREAM_USERS.values():
        theirs = {"Authorization": f"Bearer {token}"}
        r = await s.post("/api/jobs", json={"command": "/imagine a slow red circle --steps 60"},
                         headers=theirs)  # fmt: skip
        if probe.record("stream_owners_jobs", r.status) != 202:
            continue
        job_id = (await r.json())["id"]
        for _ in range(8):
            stream = await s.get(f"/api/jobs/{job_id}/events", headers=theirs)
            if probe.record("event_streams_under_load", stream.status) == 200:
                held.append(stream)
            else:
                stream.close()
    return held


def _run(tmp_path: Path, name: str, **env: str) -> tuple[Probe, str]:
    if "GOUACHE_WEB__TOKEN" in env:  # named people turn tokens on: only where a token is set anyway
        env = {**env, "GOUACHE_WEB__USERS": json.dumps(STREAM_USERS)}
    service = Service(tmp_path / name, tmp_path / f"{name}.log", GOUACHE_LOG_LEVEL="DEBUG", **env).start()
    probe = Probe()
    try:
        auth = {"Authorization": f"Bearer {env['GOUACHE_WEB__TOKEN']}"} if "GOUACHE_WEB__TOKEN" in env else {}
        asyncio.run(_abuse(service.base, probe, auth))
        if auth:  # wrong tokens, last: past the throttle this address is shut out for a while
            async def guesses() -> list[int]:
                async with ClientSession(service.base) as s:
                    return [probe.record("wrong_tokens", (await s.get(
                        "/api/jobs", headers={"Authorization": f"Bearer guess-{n}"})).status)
                        for n in range(15)]  # fmt: skip

            probe.held["wrong_tokens_throttled"] = 429 in asyncio.run(guesses())
    finally:
        service.stop()
    return probe, service.text()


def test_the_web_edge_holds_against_a_real_server(tmp_path: Path) -> None:
    report: dict[str, Any] = {}
    for name, env in (("no_token", {}), ("token", {"GOUACHE_WEB__TOKEN": TOKEN})):
        probe, log = _run(tmp_path, name, **env)
        leaks = [pattern for pattern in (TOKEN, r"sig=%C3%BC", r"sig=00\b", r"web:[A-Za-z0-9_-]{20}",
                                         *STREAM_USERS.values())
                 if re.search(pattern, log)]  # fmt: skip
        report[name] = {
            "requests_tried": dict(probe.tried),
            "statuses": {k: {str(s): n for s, n in sorted(v.items())} for k, v in probe.statuses.items()},
            "server_errors": probe.server_errors,
            "limits_held": probe.held,
            "timings": probe.timings,
            "log_leaks": leaks,
        }
        assert probe.server_errors == 0, report[name]
        assert all(probe.held.values()), report[name]
        assert leaks == [], report[name]
        assert "Traceback" not in log, log[-4000:]
    RESULTS.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
