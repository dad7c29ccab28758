"""Chat captions carry the /diversity report's text block, and its composite is posted first."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from gouache.bot.adapter import Result
from gouache.bot.captions import result_text
from gouache.request import Kind
from gouache.storage.jobs import Artifact, ArtifactKind, Job, JobStatus
from tests.support.factories import make_request


def test_report_text_and_composite_reach_chat() -> None:
    now = datetime.now(UTC)
    request = make_request(kind=Kind.DIVERSITY, count=2, enlarge="variants")
    job = Job("j1", request, JobStatus.SUCCEEDED, 1, now, now)
    summary = "enlarged with variants: baseline -> enlarged, same seeds\ncontent: 1.0 -> 2.0 (+100%) distinct of 2\nverdict: varied"
    artifacts = (
        Artifact("j1", "image-0.png", ArtifactKind.IMAGE, "image/png", b"\x89PNG0", 0),
        Artifact("j1", "image-1.png", ArtifactKind.IMAGE, "image/png", b"\x89PNG1", 1),
        Artifact("j1", "report.json", ArtifactKind.REPORT, "application/json", json.dumps({"summary": summary}).encode()),
        Artifact("j1", "report.png", ArtifactKind.COMPOSITE, "image/png", b"\x89PNGc"),
    )
    result = Result(job, artifacts)
    text = result_text(result)
    assert summary in text and text.endswith("verdict: varied")
    from gouache.bot.adapters.discord import outbox
    from gouache.bot.adapters.slack import app

    assert outbox._SHOWN[0] is app._SHOWN[0] is ArtifactKind.COMPOSITE  # posted first, on both


def test_every_tile_of_an_ordinary_job_says_what_it_is() -> None:
    from gouache.bot.captions import artifact_label
    from gouache.storage.jobs import Artifact, ArtifactKind
    from tests.support.factories import make_request

    request = make_request(count=2)
    made = [Artifact("j", "image-1.png", ArtifactKind.IMAGE, "image/png", b"", 1),
            Artifact("j", "denoise-1.gif", ArtifactKind.GIF, "image/gif", b"", 1),
            Artifact("j", "depth.png", ArtifactKind.DEPTH, "image/png", b""),
            Artifact("j", "report.png", ArtifactKind.COMPOSITE, "image/png", b"")]  # fmt: skip
    assert [artifact_label(request, a) for a in made] == [
        "image 2", "GIF 2", "depth map used", "diversity report picture"]
