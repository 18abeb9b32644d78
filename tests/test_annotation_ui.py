"""The annotation pages in a real browser: headless Chromium (Debian's package) driven by Playwright against a real
`arbiter serve`. Screenshots go to ARBITER_SCREENSHOTS, or a temporary folder whose path the run prints."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.server import RunningServer, add_annotator, running_server

CHROMIUM = os.environ.get("ARBITER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root and on a closed network: no sandbox, and none of Chromium's own background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Module-scoped: Playwright's sync API runs an event loop in this thread while it is open, and later tests call
# asyncio.run().
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("ARBITER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {folder}")
    return folder


class Site:
    def __init__(self, server: RunningServer, db: str, lead: str) -> None:
        self.server, self.db, self.lead = server, db, lead

    def api(self, method: str, path: str, key: str, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}
        return httpx.request(method, self.server.url + path, headers=headers, timeout=60, **kw)

    def annotator(self, name: str) -> str:
        return self.api("POST", "/v1/annotation/annotators", self.lead, json={"name": name}).json()["key"]

    def upload(self, *specs: dict) -> list[int]:
        r = self.api("POST", "/v1/annotation/tasks", self.lead, json={"tasks": list(specs)})
        assert r.status_code == 201, r.text
        return r.json()["task_ids"]

    def export(self, **params: object) -> list[dict]:
        text = self.api("GET", "/v1/annotation/export", self.lead, params=params).text
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def site(bundle_dir: Path, tmp_path: Path) -> Iterator[Site]:
    """A server with an empty store of its own, so each page test sees only its own tasks."""
    db = f"sqlite:///{tmp_path / 'annotations.sqlite'}"
    lead = add_annotator(db, "lead", "lead")
    flags = ["--bundles", f"rm={bundle_dir}", "--annotation-db", db, "--judge-backend", "off", "--grpc-port", "0"]
    with running_server(tmp_path, *flags) as server:
        yield Site(server, db, lead)


def open_page(browser, site: Site, key: str, path: str = "/annotate", width: int = 1280, height: int = 900):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.goto(site.server.url + path)
    page.fill("#key", key)
    page.press("#key", "Enter")
    return page


def shown_texts(page) -> list[str]:
    return [t.strip() for t in page.locator(".response .body").all_inner_texts()]


def test_a_full_annotation_session_by_keyboard(browser, site: Site, screenshots: Path):
    site.upload(
        *[
            {"prompt": f"Question {i}: *how* do I boil an egg?", "responses": [f"Gently, {i}.", f"Loudly, {i}."]}
            for i in range(4)
        ],
        {"prompt": "Rank these greetings.", "responses": ["Hello!", "Hi.", "Greetings, human."]},
    )
    key = site.annotator("keyboard")
    page = open_page(browser, site, key)
    page.wait_for_selector("#work:not([hidden])")
    assert page.inner_text("#progress") == "Done 0 · skipped 0 · left for you 5"
    assert page.locator("#prompt em").inner_text() == "how"  # markdown is rendered

    answers = {}
    first = shown_texts(page)
    assert page.locator("#submit").is_disabled()
    page.keyboard.press("a")
    page.keyboard.press("3")
    assert page.get_attribute('[data-choice="A"]', "aria-pressed") == "true"
    page.screenshot(path=str(screenshots / "annotate-wide.png"), full_page=True)
    page.keyboard.press("Enter")
    answers[first[0]] = "better"
    expect(page.locator("#progress")).to_contain_text("Done 1 ")

    second = shown_texts(page)
    page.keyboard.press("b")
    page.keyboard.press("4")
    page.keyboard.press("f")
    page.click("#rationale")
    page.keyboard.type("B is calmer; A shouts. Typing a b t s here must not change the choice.")
    assert page.get_attribute('[data-choice="B"]', "aria-pressed") == "true"
    page.keyboard.press("Control+Enter")
    answers[second[1]] = "significantly_better"
    expect(page.locator("#progress")).to_contain_text("Done 2 ")

    page.keyboard.press("t")
    assert page.locator('input[value="better"]').is_disabled()  # a tie has no strength
    page.keyboard.press("Enter")
    expect(page.locator("#progress")).to_contain_text("Done 3 ")

    page.keyboard.press("s")
    expect(page.locator("#progress")).to_contain_text("skipped 1")

    page.wait_for_selector("select.rank")
    greetings = shown_texts(page)
    order = {"Greetings, human.": "1", "Hello!": "2", "Hi.": "3"}
    for select, text in zip(page.locator("select.rank").all(), greetings, strict=True):
        select.select_option(order[text])
    page.click("#submit")
    page.wait_for_selector("#done:not([hidden])")
    assert page.inner_text("#progress").startswith("Done 4 · skipped 1")
    assert page.problems == []

    pairs = {r["chosen"]: r for r in site.export() if "chosen" in r}
    assert set(pairs) == set(answers)  # the tie and the skipped task give no preference row
    for chosen, strength in answers.items():
        assert pairs[chosen]["margin"] == {"better": 0.6667, "significantly_better": 1.0}[strength]
    flagged = [r for r in pairs.values() if r["meta"]["safety_flags"]]
    assert [r["chosen"] for r in flagged] == [second[1]]
    (ranked,) = [r for r in site.export() if "ranking" in r]
    assert ranked["responses"] == ["Hello!", "Hi.", "Greetings, human."] and ranked["ranking"] == [2, 3, 1]
    audit = site.api("GET", "/v1/annotation/audit", site.lead).json()["events"]
    rationale = [e["data"]["rationale"] for e in audit if e["action"] == "annotation.submit" and e["data"]["rationale"]]
    assert rationale == ["B is calmer; A shouts. Typing a b t s here must not change the choice."]

    page.reload()  # a reload (or a restart) finds the session where it was
    page.wait_for_selector("#done:not([hidden])")
    page.close()


HOSTILE_PROMPT = "Summarise: <script>window.__pwned = 'prompt'</script> <b>bold?</b>"
HOSTILE_A = "<img src=x onerror=\"window.__pwned = 'img'\"> and <svg onload=\"window.__pwned = 'svg'\"></svg>"
HOSTILE_B = "[click me](javascript:window.__pwned='link') <a href=\"javascript:window.__pwned='a'\">raw link</a>"


def test_hostile_text_is_shown_never_run(browser, site: Site, screenshots: Path):
    site.upload({"prompt": HOSTILE_PROMPT, "responses": [HOSTILE_A, HOSTILE_B]})
    page = open_page(browser, site, site.annotator("wary"))
    page.wait_for_selector(".response")
    page.screenshot(path=str(screenshots / "annotate-hostile.png"), full_page=True)

    assert "<script>window.__pwned = 'prompt'</script>" in page.inner_text("#prompt")
    assert "<b>bold?</b>" in page.inner_text("#prompt")
    texts = shown_texts(page)
    assert any("<img src=x onerror=" in t for t in texts) and any("raw link" in t for t in texts)
    assert page.locator("main script, main img, main svg, main iframe, main b").count() == 0
    assert page.locator('a[href^="javascript"]').count() == 0
    page.get_by_text("click me", exact=False).first.click()
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    for path in ("/annotate", "/annotate/static/annotate.html", "/annotate/static/annotate.js"):
        csp = httpx.get(site.server.url + path).headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.problems == []
    page.close()


def test_the_page_at_a_narrow_screen(browser, site: Site, screenshots: Path):
    site.upload({"prompt": "A long prompt " * 30, "responses": ["First answer " * 20, "Second answer " * 20]})
    page = open_page(browser, site, site.annotator("phone"), width=375, height=740)
    page.wait_for_selector(".response")
    page.screenshot(path=str(screenshots / "annotate-narrow.png"), full_page=True)
    a, b = page.locator(".response").nth(0).bounding_box(), page.locator(".response").nth(1).bounding_box()
    assert b["y"] >= a["y"] + a["height"] and abs(a["x"] - b["x"]) < 1  # stacked, not side by side
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing runs off the screen
    page.click('[data-choice="B"]')
    page.click('input[value="slightly_better"]')
    page.click("#submit")
    page.wait_for_selector("#done:not([hidden])")
    assert len(site.export()) == 1
    page.close()


def test_overview_shows_the_statistics_as_plots(browser, site: Site, screenshots: Path):
    site.upload(*[{"prompt": f"q{i}", "responses": [f"yes {i}", f"no {i}"], "annotators": 2} for i in range(6)])
    for name, contrary in (("ann-1", set()), ("ann-2", {"q1", "q4"})):
        key = site.annotator(name)
        while (r := site.api("POST", "/v1/annotation/next", key)).status_code == 200:
            view = r.json()
            wanted = "no" if view["prompt"] in contrary else "yes"
            label = next(x["label"] for x in view["responses"] if x["text"].startswith(wanted))
            answer = {"choice": label, "strength": "better"}
            site.api("POST", f"/v1/annotation/tasks/{view['task_id']}/annotations", key, json=answer)
    page = open_page(browser, site, site.lead, path="/annotate/overview")
    page.wait_for_selector("#overview:not([hidden])")
    page.screenshot(path=str(screenshots / "overview.png"), full_page=True)
    assert page.locator("svg.chart").count() == 4
    assert page.locator("#chart-annotators rect.bar").count() == 2
    cards = page.inner_text("#cards")
    assert "Annotations\n12" in cards and "Reward model agrees" in cards
    assert "4 pairs" in cards  # the two tasks the annotators split on have no majority to compare with
    stats = site.api("GET", "/v1/annotation/stats", site.lead).json()
    assert f"{stats['agreement']['krippendorff_alpha']:.3f}" in cards
    assert page.locator("#annotators tbody tr").count() == 2
    assert page.problems == []

    annotator_view = open_page(browser, site, site.annotator("curious"), path="/annotate/overview")
    annotator_view.wait_for_selector("#login-error:has-text('lead')")  # statistics are for leads
    annotator_view.close()
    page.close()
