"""Discord's packing rules, without a server: 10 files and the byte limit per message."""

from __future__ import annotations

import io

from PIL import Image

from gouache.bot.adapters.discord.text import chunks, escape
from gouache.bot.adapters.discord.upload_plans import MAX_FILES, Upload, pack, plan, reencode


def _noise(seed: int, size: int = 64) -> bytes:
    import random

    image = Image.frombytes("RGB", (size, size), random.Random(seed).randbytes(size * size * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _upload(name: str, data: bytes) -> Upload:
    return Upload(name, name, data)


def test_pack_keeps_order_and_respects_count_and_bytes() -> None:
    files = [_upload(f"f{i}", b"x" * 10) for i in range(23)]
    assert [len(b) for b in pack(files, 10_000)] == [MAX_FILES, MAX_FILES, 3]
    assert [len(b) for b in pack(files[:5], 25)] == [2, 2, 1]
    assert [u.name for b in pack(files, 10_000) for u in b] == [f.name for f in files]


def test_plan_re_encodes_a_file_too_large_alone_and_links_what_cannot_fit() -> None:
    big = _upload("image-0.png", _noise(1))
    webp = reencode(big, 1)
    assert webp is not None and webp.name == "image-0.webp" and len(webp.data) < len(big.data)
    batches, left = plan([big], len(webp.data))
    assert [[u.name for u in b] for b in batches] == [["image-0.webp"]]
    assert left == []
    batches, left = plan([big, _upload("denoise-0.gif", b"GIF89a" * 9)], 40)
    assert batches == [] and [u.source for u in left] == ["image-0.png", "denoise-0.gif"]


def test_text_is_escaped_and_chunked_for_discord() -> None:
    assert escape("[x](https://evil) @everyone") == "\\[x](https://evil) @\u200beveryone"
    parts = chunks("\n".join(["y" * 1500, "z" * 1500, "w" * 4500]))
    assert all(len(p) <= 2000 for p in parts) and "".join(parts).count("w") == 4500
