"""A person types a command into the playground and sees the images and the GIF arrive."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GENERATION_TIMEOUT_MS = 240_000  # the default demo model on a busy 2-core CPU


def test_imagine_shows_two_images_and_a_gif(service_url: str, browser) -> None:
    page = browser.new_page()
    try:
        page.goto(service_url)
        page.fill("#command", "/imagine a large red circle in the center on a plain blue background --n 2 --gif")
        page.press("#command", "Enter")

        card = page.locator(".msg.job").first
        card.locator(".status").wait_for()
        assert "/imagine a large red circle" in card.locator(".command").inner_text()

        images = card.locator("img[data-kind=image]")
        gifs = card.locator("img[data-kind=gif]")
        gifs.first.wait_for(timeout=GENERATION_TIMEOUT_MS)
        assert images.count() == 2 and gifs.count() >= 1
        page.wait_for_function(
            "() => [...document.querySelectorAll('.msg.job img')]"
            ".every(img => img.complete && img.naturalWidth > 0)"
        )
        assert card.get_attribute("data-status") == "succeeded"
        assert card.locator(".status").inner_text() == "Done."
        captions = card.locator("figcaption").all_inner_texts()  # every tile says what it is
        assert {"image 1", "image 2", "GIF 1"} <= {c.strip() for c in captions}, captions
        buttons = card.locator(".buttons button")
        assert buttons.all_inner_texts() == ["Reroll", "Variations", "Diversify",  # it already has a GIF
                                             "U1", "Remix 1", "V1 subtle", "V1 strong",
                                             "U2", "Remix 2", "V2 subtle", "V2 strong"]
        page.locator("#recent li[data-status=succeeded]").first.wait_for()

        buttons.first.click()  # reroll: a second job card appears and is queued or running
        page.locator(".msg.job").nth(1).locator(".status").wait_for()
        second = page.locator(".msg.job").nth(1).get_attribute("data-status")
        assert second in {"queued", "running", "succeeded"}
    finally:
        page.close()


def test_a_bad_command_shows_the_users_error(service_url: str, browser) -> None:
    page = browser.new_page()
    try:
        page.goto(service_url)
        page.fill("#command", "/imagine a fox --steps 9999")
        page.press("#command", "Enter")
        error = page.locator(".msg.error")
        error.wait_for()
        assert "steps must be between" in error.inner_text()
    finally:
        page.close()


# Every element lies inside the viewport, except what a deliberately sideways-scrolling
# figure (a wide grid, strip or report picture at its own size) holds; no other scroll
# container scrolls sideways (a too-wide child would make #channel do so, hiding its edge).
OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth, out = [];
  const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : "");
  if (document.documentElement.scrollWidth > width) out.push("the page scrolls sideways");
  for (const e of document.querySelectorAll("body *")) {
    const box = e.getBoundingClientRect();
    if (!box.width && !box.height) continue;
    const sideways = e.parentElement && e.parentElement.closest("figure.wide");
    if (!sideways && (box.left < -0.5 || box.right > width + 0.5)) out.push(`${name(e)} spans ${box.left}..${box.right}`);
    const style = getComputedStyle(e);
    if (!e.matches("figure.wide") && style.overflowX !== "visible" && e.scrollWidth > e.clientWidth + 1)
      out.push(`${name(e)} scrolls sideways (${e.scrollWidth} > ${e.clientWidth})`);
  }
  return out;
}"""


def test_diversity_shows_the_picture_and_the_summary_once_at_every_width(service_url: str, browser) -> None:
    """The /diversity result: the report picture at its own size and the summary once (its
    figures rounded one way), nothing past the screen's edge, at 360, 768 and 1280 px."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(service_url)
        page.fill("#command", "/diversity a large red circle in the center --n 3 --steps 4 --enlarge interval")
        page.press("#command", "Enter")
        card = page.locator(".msg.job").first
        composite = card.locator("img[data-kind=composite]")
        composite.wait_for(timeout=GENERATION_TIMEOUT_MS)
        page.wait_for_function(
            "() => { const img = document.querySelector('.msg.job img[data-kind=composite]');"
            " return img && img.complete && img.naturalWidth > 300; }"
        )
        page.wait_for_function("() => document.querySelector('.msg.job .report pre').textContent.includes('verdict:')")
        assert composite.is_visible() and card.locator("details").count() == 0
        assert card.locator("img[data-kind=image]").count() == 3
        job = page.request.get(f"{service_url}api/jobs/{card.get_attribute('data-job-id')}").json()
        [report] = [a for a in job["artifacts"] if a["kind"] == "report"]
        summary = page.request.get(service_url.rstrip("/") + report["url"]).json()["summary"]
        assert "->" in summary and "distinct of 3" in summary
        for width in (360, 768, 1280):
            page.set_viewport_size({"width": width, "height": 800})
            text = page.evaluate("() => document.body.innerText")
            for line in summary.splitlines():  # the summary, once: no second copy, no other rounding
                assert text.count(line) == 1, (width, line)
            saying = page.evaluate(
                "() => [...document.querySelectorAll('.msg.job *')].filter((e) => [...e.childNodes]"
                ".some((n) => n.nodeType === 3 && /\\bof 3\\b/.test(n.textContent))).length"
            )
            assert saying == 1, f"{saying} elements give the figures out of 3 at {width} px"
            assert page.evaluate(OVERFLOWING) == [], width
            picture = composite.bounding_box()
            assert picture is not None and picture["width"] == page.evaluate(
                "() => document.querySelector('img[data-kind=composite]').naturalWidth")  # its own size
    finally:
        page.close()


@pytest.mark.parametrize("width", [360, 768, 1280])
def test_the_page_fits_the_screen_and_suggests_what_the_demo_draws(
    service_url: str, browser, width: int
) -> None:
    page = browser.new_page(viewport={"width": width, "height": 800})
    try:
        page.goto(service_url)
        assert "coloured shapes" in page.locator(".hint").inner_text()
        assert page.locator("link[rel=icon]").count() == 1
        assert page.evaluate(OVERFLOWING) == [], f"past the edge of a {width} px screen"
        channel = page.locator("#channel").bounding_box()
        assert channel is not None
        if width < 700:  # the sidebar goes below the messages instead of squeezing them
            assert channel["width"] >= width * 0.9, channel
    finally:
        page.close()


def test_help_and_loras_answer_in_the_channel_without_a_job(service_url: str, browser) -> None:
    page = browser.new_page()
    try:
        page.goto(service_url)
        page.fill("#command", "/help")
        page.press("#command", "Enter")
        answer = page.locator(".msg.listing")
        answer.wait_for()
        text = answer.inner_text()
        assert text.startswith("gouache with builtin:demo") and "ddim" in text and "flow-euler" not in text
        page.fill("#command", "/loras --model nope")
        page.press("#command", "Enter")
        error = page.locator(".msg.error")
        error.wait_for()
        assert "Unknown model “nope”" in error.inner_text()
        assert page.locator(".msg.job").count() == 0
    finally:
        page.close()
