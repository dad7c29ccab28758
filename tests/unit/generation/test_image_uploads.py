"""The /depth hostile-upload corpus at the image doors: /imagine with an image and /upscale.

Every file refused for what it is (format, size, damage, bombs, animation, EXIF, palette...)
gets the very refusal /depth gives, at admission and in the worker. Cases about a depth map's
*values* (constant or NaN maps, array shapes) are not bad images: a flat grey PNG remixes, and
a .npy array is refused as not an image.
"""

from __future__ import annotations

import pytest

from gouache.bot.uploads import attach
from gouache.errors import UserError
from gouache.request import Kind
from gouache.storage.jobs import Artifact, ArtifactKind
from gouache.worker.jobs import start_image
from tests.support.factories import make_request
from tests.unit.generation.test_depth_corpus import CASES, LIMITS, _refusal

MAP_VALUES = {"NaN/inf map", "constant map", "zero-size .npy", "3-D array", "4-D array",
              "1-D or 0-D array", ".npy forced as a photo"}  # fmt: skip
FILE_CASES = [case for case in CASES if case[0] not in MAP_VALUES]


@pytest.mark.parametrize(("kind", "variant", "data", "mode"), FILE_CASES,
                         ids=[f"{k}:{v}" for k, v, *_ in FILE_CASES])  # fmt: skip
@pytest.mark.parametrize("command", [Kind.IMAGINE, Kind.UPSCALE])
def test_every_bad_file_gets_the_depth_refusal(command, kind, variant, data, mode) -> None:
    depth = _refusal(lambda: attach(make_request(kind=Kind.DEPTH, depth_input=mode), data, LIMITS))
    request = make_request(kind=command, prompt="a fox")
    at_admission = _refusal(lambda: attach(request, data, LIMITS))
    upload = Artifact("", "input-0.png", ArtifactKind.INPUT, "image/png", data)
    in_worker = _refusal(lambda: start_image(request, [upload], LIMITS))
    assert at_admission.message == depth.message == in_worker.message
    assert type(at_admission) is type(depth)


def test_a_npy_map_is_not_an_image() -> None:
    data = next(d for k, _, d, _ in CASES if k == "constant map" and d.startswith(b"\x93NUMPY"))
    with pytest.raises(UserError, match="npy array"):
        attach(make_request(kind=Kind.UPSCALE, prompt="x"), data, LIMITS)
