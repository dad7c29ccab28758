"""The web API end to end in one process: real SQLite storage, admission, delivery, and the
real worker loop with a timed fake engine (no torch), driven over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, CookieJar, FormData, web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from prometheus_client import CollectorRegistry

from gouache import messages
from gouache.bot.adapters.web import WebAdapter
from gouache.bot.admission import Admission
from gouache.bot.delivery import Delivery
from gouache.bot.links import ArtifactLinks, load_link_key
from gouache.bot.moderation import BLOCKED_MESSAGE, ModeratedAdmission, PromptFilter
from gouache.config import Settings
from gouache.observability import Metrics
from gouache.storage import open_storage
from gouache.web.app import AppDeps, make_app
from gouache.web.health import Health
from gouache.web.metrics import QueueMetrics
from gouache.worker.loop import Worker
from tests.support.adapters import adapter_deps
from tests.support.engines import TimedEngine

FAKE_ENGINE = "tests.support.engines:TimedEngine"


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "worker": {
            "lease_seconds": 5,
            "heartbeat_seconds": 0.2,
            "poll_seconds": 0.05,
            "progress_interval_seconds": 0.05,
            "engine": FAKE_ENGINE,
        },
        "batching": {"max_batch_images": 8, "batch_window_ms": 150},
        "admission": {"rate_per_minute": 600, "burst": 50},
        "moderation": {"blocked_words": ["gore"]},
    }
    base.update(overrides)
    return Settings(**base)


class Stack:
    """The same wiring as ``service.serve``, minus the child process and the TCP port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_task: asyncio.Task[None] | None = None
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Stack:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = await open_storage(s.resolved_database_url)
        admission = ModeratedAdmission(PromptFilter(s.moderation), Admission(self.storage, s))
        wake = asyncio.Event()
        link_key = load_link_key(s.data_dir)  # as ``service``: cookies outlive a restart
        links = ArtifactLinks("http://gouache.test", link_key)
        self.adapter = WebAdapter(
            adapter_deps(s, self.storage, admission, on_admitted=wake.set, artifact_url=links.url),
            links,
        )
        self.delivery = Delivery(self.storage, {"web": self.adapter}, poll_seconds=0.05, wake=wake)
        self.metrics = QueueMetrics(self.storage, Metrics(CollectorRegistry()))
        app = make_app(AppDeps(s, self.adapter, Health(self.storage, s), self.metrics, signing_key=link_key))
        self.delivery_task = asyncio.create_task(self.delivery.run())
        self.server = TestServer(app)
        self.client = TestClient(self.server)
        await self.client.start_server()
        await self.client.get("/")  # a browser opens the page first: that issues its user id
        return self

    def start_worker(self, engine: Any = None) -> None:
        worker = Worker(self.storage, engine or TimedEngine(), self.settings, "w-test")
        self.worker_task = asyncio.create_task(worker.run(self.stop))

    @contextlib.asynccontextmanager
    async def browser(self) -> AsyncIterator[ClientSession]:
        """A second browser: its own cookie jar, so its own user id (issued on its page load)."""
        root = str(self.server.make_url("/"))
        async with ClientSession(base_url=root, cookie_jar=CookieJar(unsafe=True)) as session:
            await session.get("/")
            yield session

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        for task in (self.worker_task, self.delivery_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.client.close()
        await self.storage.close()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(_settings(tmp_path)) as running:
        yield running


async def _submit(client: TestClient | ClientSession, command: str, **kw: Any) -> dict[str, Any]:
    response = await client.post("/api/jobs", json={"command": command}, **kw)
    body = await response.json()
    assert response.status == 202, body
    return body


async def _until_done(client: TestClient, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await (await client.get(f"/api/jobs/{job_id}")).json()
        if job["status"] not in ("queued", "running"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


async def test_imagine_streams_progress_and_serves_images_and_gif(stack: Stack) -> None:
    stack.start_worker()
    created = await _submit(stack.client, "/imagine a red fox --n 2 --gif --steps 8")
    response = await stack.client.get(f"/api/jobs/{created['id']}/events")
    assert response.headers["Content-Type"] == "text/event-stream"
    events = []
    async for line in response.content:
        if line.startswith(b"event: "):
            events.append(line[7:].strip().decode())
        elif line.startswith(b"data: "):
            last = json.loads(line[6:])
    assert events[-1] == "done" and events.count("done") == 1
    assert last["status"] == "succeeded" and last["progress"] == 1
    kinds = sorted(a["kind"] for a in last["artifacts"])
    assert kinds.count("image") == 2 and kinds.count("gif") == 2
    for artifact in last["artifacts"]:
        body = await stack.client.get(artifact["url"])
        assert body.status == 200 and body.headers["Content-Type"] == artifact["mime"]
        Image.open(io.BytesIO(await body.read())).verify()
    per_image = {f"{a}.{i}" for a in ("upscale", "vary-subtle", "vary-strong") for i in (0, 1)}
    assert set(last["actions"]) == {"reroll", "variations", "diversify"} | per_image  # it has a GIF


async def test_user_errors_are_json_with_the_users_message(stack: Stack) -> None:
    client = stack.client
    bad = await client.post("/api/jobs", json={"command": "/imagine a fox --steps 5000"})
    assert bad.status == 400
    assert "steps must be between 1 and 60" in (await bad.json())["error"]
    blocked = await client.post("/api/jobs", json={"command": "/imagine gore everywhere"})
    assert blocked.status == 403 and (await blocked.json()) == {"error": BLOCKED_MESSAGE}
    no_file = await client.post("/api/jobs", json={"command": "/depth a castle"})
    assert no_file.status == 400 and "/depth needs" in (await no_file.json())["error"]
    missing = await client.get("/api/jobs/nope")
    assert missing.status == 404 and "error" in await missing.json()
    not_json = await client.post(
        "/api/jobs", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert not_json.status == 400


async def test_rate_limit_is_per_browser_with_retry_after(tmp_path: Path) -> None:
    settings = _settings(tmp_path, admission={"rate_per_minute": 1, "burst": 1})
    async with Stack(settings) as stack:
        await _submit(stack.client, "/imagine one")
        refused = await stack.client.post("/api/jobs", json={"command": "/imagine two"})
        assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
        async with stack.browser() as other:
            await _submit(other, "/imagine three")  # another browser, another bucket


async def test_depth_upload_is_stored_as_the_jobs_input(stack: Stack) -> None:
    png = io.BytesIO()
    Image.linear_gradient("L").resize((32, 32)).save(png, format="PNG")  # flat maps are refused
    form = FormData()
    form.add_field("command", "/depth a castle")
    form.add_field("file", png.getvalue(), filename="../../etc/passwd", content_type="image/png")
    response = await stack.client.post("/api/jobs", data=form)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["id"]
    job = await stack.storage.get_job(job_id)
    assert job.request.attachment == "input-0.png"
    (upload,) = await stack.storage.artifacts(job_id)
    assert upload.data == png.getvalue() and upload.mime == "image/png"

    junk = FormData()
    junk.add_field("command", "/depth a castle")
    junk.add_field("file", b"MZ\x90\x00 not an image", filename="x.png")
    refused = await stack.client.post("/api/jobs", data=junk)
    assert refused.status == 400 and "PNG, JPEG or WEBP" in (await refused.json())["error"]


async def test_recent_jobs_and_cancel_belong_to_the_browser(stack: Stack) -> None:
    mine = await _submit(stack.client, "/imagine mine")
    async with stack.browser() as other:
        theirs = await _submit(other, "/imagine theirs")
        listed = await (await other.get("/api/jobs")).json()
        assert [j["id"] for j in listed["jobs"]] == [theirs["id"]]
        refused = await other.post(f"/api/jobs/{mine['id']}/cancel")
        assert refused.status == 403
    cancelled = await stack.client.post(f"/api/jobs/{mine['id']}/cancel")
    assert (await cancelled.json())["status"] == "cancelled"


async def test_buttons_make_follow_up_jobs(stack: Stack) -> None:
    stack.start_worker()
    source = await _submit(stack.client, "/imagine a lighthouse --seed 7")
    await _until_done(stack.client, source["id"])
    made = {}
    for action in ("reroll", "gif", "diversify"):
        response = await stack.client.post(f"/api/jobs/{source['id']}/actions/{action}")
        assert response.status == 202, await response.text()
        made[action] = await stack.storage.get_job((await response.json())["id"])
    assert made["reroll"].request.prompt == "a lighthouse" and made["reroll"].request.seed != 7
    assert made["gif"].request.gif and made["gif"].request.seed == 7
    assert made["diversify"].request.kind.value == "diversity"
    unknown = await stack.client.post(f"/api/jobs/{source['id']}/actions/upscale")
    assert unknown.status == 404


async def test_an_image_in_then_u_v_and_a_remix_of_a_result_after_a_restart(tmp_path: Path) -> None:
    """/imagine with an uploaded image runs image-to-image and its image comes out; after a
    restart (a new server over the same data directory, the browser's cookie kept) U and V
    under that image and a remix of it with a new prompt (``/remix/0``, no upload) make jobs
    from it, and only its owner may remix it."""
    photo = io.BytesIO()
    Image.linear_gradient("L").resize((48, 32)).convert("RGB").save(photo, format="PNG")
    async with Stack(_settings(tmp_path)) as first:
        first.start_worker()
        form = FormData()
        form.add_field("command", "/imagine a red fox --strength 0.5 --steps 4")
        form.add_field("file", photo.getvalue(), filename="fox.png", content_type="image/png")
        response = await first.client.post("/api/jobs", data=form)
        assert response.status == 202, await response.text()
        source = await _until_done(first.client, (await response.json())["id"])
        assert source["status"] == "succeeded"
        assert {"upscale.0", "vary-subtle.0", "vary-strong.0"} <= set(source["actions"])
        image = next(a for a in source["artifacts"] if a["kind"] == "image")
        out = await (await first.client.get(image["url"])).read()
        assert Image.open(io.BytesIO(out)).size == (48, 32)
        cookies = {c.key: c.value for c in first.client.session.cookie_jar}

    async with Stack(_settings(tmp_path)) as second:  # a restart: same database and keys
        jar = second.client.session.cookie_jar
        jar.clear()  # the page load issued a new user; the browser still has the first cookie
        jar.update_cookies(cookies, response_url=second.server.make_url("/"))
        second.start_worker()
        made = {}
        for action in ("upscale.0", "vary-strong.0"):
            response = await second.client.post(f"/api/jobs/{source['id']}/actions/{action}")
            assert response.status == 202, await response.text()
            made[action] = (await response.json())["id"]
        response = await second.client.post(f"/api/jobs/{source['id']}/remix/0",
                                            json={"command": "a blue fox --strength 0.4 --steps 4"})  # fmt: skip
        assert response.status == 202, await response.text()
        made["remix"] = (await response.json())["id"]
        async with second.browser() as other:  # not theirs
            refused = await other.post(f"/api/jobs/{source['id']}/remix/0", json={"command": "a cat"})
            assert refused.status == 403
        missing = await second.client.post(f"/api/jobs/{source['id']}/remix/x", json={"command": "a cat"})
        assert missing.status == 404
        no_image = await second.client.post(f"/api/jobs/{source['id']}/remix/0",
                                            json={"command": "/diversity a cat"})  # fmt: skip
        assert no_image.status == 400 and "/upscale" in (await no_image.json())["error"]
        gone = await second.client.post(f"/api/jobs/{source['id']}/remix/3", json={"command": "a cat"})
        assert gone.status == 400 and (await gone.json())["error"] == messages.image_gone()
        for job_id in made.values():
            assert (await _until_done(second.client, job_id))["status"] == "succeeded"
        jobs = {name: await second.storage.get_job(job_id) for name, job_id in made.items()}
        assert jobs["upscale.0"].request.kind.value == "upscale"
        assert (jobs["upscale.0"].request.width, jobs["upscale.0"].request.height) == (96, 64)
        assert jobs["vary-strong.0"].request.denoise == 0.7
        remix = jobs["remix"].request
        assert remix.kind.value == "imagine" and remix.prompt == "a blue fox" and remix.denoise == 0.4
        [start] = [a for a in await second.storage.artifacts(made["remix"]) if a.kind.value == "input"]
        assert start.data == out  # the result itself, not the first upload


async def test_healthz_needs_a_recent_worker_heartbeat(stack: Stack) -> None:
    before = await stack.client.get("/healthz")
    assert before.status == 503 and "worker" in await before.json()
    # Workers scaled to zero (KEDA): the bot's own probe asks about the bot and database only.
    optional = await stack.client.get("/healthz?worker=optional")
    assert optional.status == 200 and (await optional.json())["worker"] == messages.no_worker_yet()
    stack.start_worker()
    for _ in range(100):
        if (await stack.client.get("/healthz")).status == 200:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("healthz never became healthy")


async def test_metrics_report_batch_sizes_and_queue_wait_after_a_burst(stack: Stack) -> None:
    ids = [(await _submit(stack.client, f"/imagine fox {i} --n 2"))["id"] for i in range(6)]
    stack.start_worker()
    for job_id in ids:
        await _until_done(stack.client, job_id)
    text = await (await stack.client.get("/metrics")).text()
    values = _samples(text)
    assert values["gouache_batch_size_images_count"] >= 2  # 12 images, at most 8 per batch
    assert values["gouache_batch_size_images_sum"] == 12
    assert values["gouache_queue_wait_seconds_count"] == 6
    assert values["gouache_images_generated_total"] == 12
    assert values["gouache_generation_seconds_count"] == values["gouache_batch_size_images_count"]
    assert values["gouache_queue_depth"] == 0


def _samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


async def test_off_loopback_the_api_needs_the_token(tmp_path: Path, caplog) -> None:
    settings = _settings(tmp_path, host="0.0.0.0", web={"token": "s3cret-token"})
    async with Stack(settings) as stack:
        assert (await stack.client.get("/api/jobs")).status == 401
        assert (await stack.client.get("/healthz")).status == 503  # open, just unhealthy
        ok = await stack.client.get("/api/jobs", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status == 200
        landing = await stack.client.get("/?token=s3cret-token", allow_redirects=False)
        assert landing.status == 302 and landing.headers["Location"] == "/"
        assert (await stack.client.get("/api/jobs")).status == 200  # the cookie now carries it
    assert "s3cret-token" not in caplog.text


async def test_the_page_and_its_assets_are_served(stack: Stack) -> None:
    page = await stack.client.get("/")
    assert page.status == 200 and "gouache" in await page.text()
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert (await stack.client.get("/static/app.js")).status == 200
    assert isinstance(stack.server.app, web.Application)


def _photo_png(size: int = 48) -> bytes:
    """A textured colour picture: taken as a photo (depth estimated), never as a depth map."""
    import numpy as np

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixels[: size // 2, :, 0] = 220  # a red sky over a noisy ground
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


async def test_a_depth_strength_sweep_from_a_photo_runs_every_cell(stack: Stack) -> None:
    """/depth --sweep strength with a photo: the worker estimates the photo's depth for the
    cells (as for any /depth job) rather than refusing it as "no depth estimator"."""
    stack.start_worker()
    form = FormData()
    form.add_field("command", "/depth a castle --steps 3 --sweep strength=0.3,0.6,1.0")
    form.add_field("file", _photo_png(), filename="photo.png", content_type="image/png")
    response = await stack.client.post("/api/jobs", data=form)
    assert response.status == 202, await response.text()
    created = await response.json()
    assert any("photo" in note for note in created.get("notes", [])), created
    job = await _until_done(stack.client, created["id"], timeout=60)
    assert job["status"] == "succeeded", job.get("error")
    names = [a["name"] for a in job["artifacts"]]
    # the grid, the cells, and the depth map the cells followed, once
    assert names[0] == "grid.png" and set(names[1:]) == {"image-0.png", "image-1.png", "image-2.png", "depth.png"}
    stored = await stack.storage.get_job(created["id"])
    assert [stored.request.strength, stored.request.sweep] == [1.0, (("strength", ("0.3", "0.6", "1")),)]


async def test_the_playground_gets_each_experiments_files_in_order_with_labels(tmp_path: Path) -> None:
    """A 6x2 sweep, an interpolation and --process on builtin:tiny through the real engine: the
    API lists the grid first, then the cells by index (cell 10 after cell 9), each labelled with
    its axis values (checked against the cell's own PNG parameters); the GIFs and strips come
    first for their jobs, labelled; the grid and strips are marked wide (shown at their size,
    not as 192 px thumbnails). The page's script shows labels and wide images."""
    from gouache.generation.loop.engine import Engine
    from gouache.generation.models import ModelRegistry

    settings = _settings(tmp_path, default_model="builtin:tiny")
    async with Stack(settings) as stack:
        stack.start_worker(Engine(ModelRegistry(settings.models, cache_dir=tmp_path / "models",
                                                device="cpu")))  # fmt: skip
        client = stack.client
        sweep = await _submit(client, "/imagine a fox --steps 2 --sweep seed=1,2,3,4,5,6 --sweep cfg=3,7")
        frames = await _submit(client, "/interpolate a red fox | a blue whale --frames 3 --steps 2")
        process = await _submit(client, "/imagine a fox --steps 3 --process")
        done = [await _until_done(client, j["id"], timeout=120) for j in (sweep, frames, process)]
        assert [j["status"] for j in done] == ["succeeded"] * 3, [j["error"] for j in done]
        grid_job, frames_job, process_job = done

        names = [a["name"] for a in grid_job["artifacts"]]
        assert names == ["grid.png", *(f"image-{k}.png" for k in range(12))]
        grid, *cells = grid_job["artifacts"]
        assert grid["label"] == "sweep grid: seed x cfg" and grid["wide"] is True
        assert not any(c["wide"] for c in cells)
        assert cells[7]["label"] == "cell 7: seed=2, cfg=7" and cells[10]["label"] == "cell 10: seed=5, cfg=7"
        for cell in (cells[7], cells[10]):
            body = await client.get(cell["url"])
            parameters = Image.open(io.BytesIO(await body.read())).info["parameters"]
            seed, cfg = (part.split("=")[1] for part in cell["label"].split(": ")[1].split(", "))
            assert f"Seed: {seed}," in parameters and f"CFG scale: {cfg}" in parameters, parameters

        shown = [(a["name"], a["label"], a["wide"]) for a in frames_job["artifacts"]]
        assert shown[:2] == [("interpolation.gif", "interpolation (looping GIF)", False),
                             ("strip.png", "interpolation strip (the weight under each frame)", True)]
        assert [s[:2] for s in shown[2:]] == [("image-0.png", "endpoint A (frame 1 of 3)"),
                                              ("image-2.png", "endpoint B (frame 3 of 3)")]  # fmt: skip
        shown = [(a["name"], a["mime"], a["wide"], bool(a["label"])) for a in process_job["artifacts"]]
        assert shown == [("process.gif", "image/gif", False, True),
                         ("process-strip.png", "image/png", True, True),
                         ("image-0.png", "image/png", False, True)]  # fmt: skip
        for job in done:
            for artifact in job["artifacts"]:
                body = await client.get(artifact["url"])
                assert body.status == 200 and body.headers["Content-Type"] == artifact["mime"]

        script = await (await client.get("/static/app.js")).text()
        assert "art.label" in script and "figcaption" in script and "art.wide" in script


_MODELS = {
    "sd15": {"path": "/models/sd15", "family": "sd", "depth_controlnet": "/models/cn-depth"},
    "flux-dev": {"path": "black-forest-labs/FLUX.1-dev", "family": "flux"},
    "flux-schnell": {"path": "black-forest-labs/FLUX.1-schnell", "family": "flux"},
}


async def test_help_and_loras_list_what_each_model_takes(tmp_path: Path) -> None:
    from gouache.generation.loop.samplers import samplers_of_kind

    styles = {"poster": {"prompt": "{prompt}, poster", "description": "flat colours"}}
    loras = {"crisp": {"path": str(tmp_path / "crisp.safetensors"), "family": "sd", "trigger": ["crisp"]}}
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"lora_unet_x_attn2_to_k.lora_down.weight": np.zeros((2, 768), np.float32)},
              str(tmp_path / "crisp.safetensors"))  # fmt: skip
    async with Stack(_settings(tmp_path, models=_MODELS, styles=styles, loras=loras)) as stack:
        client = stack.client
        schnell = await (await client.get("/api/help", params={"model": "flux-schnell"})).json()
        assert schnell["samplers"] == list(samplers_of_kind("flow")) and schnell["guidance"] == "none"
        assert "--cfg" not in schnell["flags"] and "--no" not in schnell["flags"]
        assert "/depth" not in schnell["commands"] and "/help" in schnell["commands"]
        assert (schnell["steps"], schnell["family"]) == (4, "flux")
        assert "flux-schnell takes no guidance" in schnell["text"] and "euler-a" not in schnell["text"]
        default = await (await client.get("/api/help")).json()  # builtin:demo
        assert default["model"] == "builtin:demo" and "/depth" in default["commands"]
        assert default["samplers"] == list(samplers_of_kind("eps")) and "--cfg" in default["flags"]
        sd = await (await client.get("/api/help?model=SD15")).json()  # resolved as --model is
        assert sd["model"] == "sd15" and "--lora" in sd["flags"] and sd["loras"] == ["crisp"]
        listed = await (await client.get("/api/loras", params={"model": "sd15"})).json()
        assert listed["loras"] == [{"name": "crisp", "default_scale": 1.0, "trigger": ["crisp"],
                                    "description": ""}]  # fmt: skip
        assert listed["styles"] == [{"name": "poster", "description": "flat colours"}]
        assert "`crisp` (default 1) - trigger: crisp" in listed["text"]
        flux = await (await client.get("/api/loras?model=flux-dev")).json()
        assert flux["loras"] == [] and flux["model"] == "flux-dev"
        unknown = await client.get("/api/loras?model=nope")
        assert unknown.status == 400 and "Unknown model “nope”" in (await unknown.json())["error"]
        refused = await client.post("/api/jobs", json={"command": "/depth a hill --model flux-dev"})
        assert refused.status == 400
        assert (await refused.json())["error"] == "Model 'flux-dev' has no depth ControlNet configured."


async def test_the_png_and_the_command_say_what_cfg_was(tmp_path: Path) -> None:
    async with Stack(_settings(tmp_path, models=_MODELS)) as stack:
        stack.start_worker()
        made = {}
        for model, label in (("flux-dev", "Distilled guidance: 3.5"), ("flux-schnell", "Guidance: none"),
                             ("sd15", "CFG scale: 7")):  # fmt: skip
            created = await _submit(stack.client, f"/imagine a fox --model {model} --size 64x64 --steps 2")
            made[label] = await _until_done(stack.client, created["id"])
        for label, job in made.items():
            assert job["status"] == "succeeded", job["error"]
            [image] = [a for a in job["artifacts"] if a["kind"] == "image"]
            body = await stack.client.get(image["url"])
            parameters = Image.open(io.BytesIO(await body.read())).info["parameters"]
            assert f", {label}, " in parameters, parameters
