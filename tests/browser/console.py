#!/usr/bin/env python3
"""Browser scenarios for the web console, run by the Rust test harness against a live server.

    python3 tests/browser/console.py SCENARIO --base-url http://127.0.0.1:PORT --api-key KEY \
        --artifacts DIR [--fixture PATH]

SCENARIO is one of: pages, chat, chat-resume, scan, scan-cancel, document, revoke, units. Exit
status 0 on success; 1 with a line starting `FAIL` on stderr when the console misbehaves; 2 for a
wrong invocation or a missing browser. Every scenario fails on any browser console error, uncaught
page error or WCAG 2.1 A/AA violation (axe-core) on the pages it checks, and saves a full-page screenshot of each page it visits (and `failure.png` when it fails) into DIR.

It drives Debian's Chromium (/usr/bin/chromium, or $CHROMIUM) through Playwright for Python;
no browser is downloaded. There is no fixed sleep anywhere: every step waits on a condition.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import traceback
from pathlib import Path

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - reported as a usage problem
    print("error: Playwright for Python is not installed "
          "(pip install --break-system-packages playwright)", file=sys.stderr)
    sys.exit(2)

SCENARIOS = ("pages", "chat", "chat-resume", "scan", "scan-cancel", "document", "revoke", "units")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Generous: a debug server on a busy two-core machine can be slow; nothing waits longer than it
# must, since every wait ends as soon as its condition holds.
TIMEOUT_MS = 30_000
SCAN_TIMEOUT_MS = 240_000
DOCUMENT_TIMEOUT_MS = 120_000
CHAT_TIMEOUT_MS = 90_000

QUESTION = "What does HIPAA require for encryption at rest?"

expect.set_options(timeout=TIMEOUT_MS)


class Failure(Exception):
    """The console did not do what the scenario expects."""


class Session:
    """One browser, the pages it opened, and every console error they logged."""

    def __init__(self, browser, args):
        self.browser = browser
        self.args = args
        self.base = args.base_url.rstrip("/")
        self.artifacts = Path(args.artifacts)
        self.errors: list[str] = []
        self.expected_401s: list[str] = []
        # While positive, "401" network messages are expected (signed out, a revoked key):
        # Chromium logs every failed response as a console error, and a signed-out console
        # necessarily gets a 401 from GET /api/v1/session.
        self._allow_401 = 0
        self.contexts = []
        # API requests the console made: the per-key rate limit (100 a minute by default) must
        # leave room for a scenario.
        self.api_requests = 0
        # Pages checked with axe-core.
        self.accessibility_checks = 0

    @contextlib.contextmanager
    def expecting_401(self):
        self._allow_401 += 1
        try:
            yield
        finally:
            self._allow_401 -= 1

    def page(self, viewport) -> Page:
        context = self.browser.new_context(viewport=viewport, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.errors.append(f"uncaught page error: {err}"))
        page.on("crash", lambda _: self.errors.append("the page crashed"))
        page.on("request", self._request)
        return page

    def _request(self, request):
        if "/api/v1/" in request.url:
            self.api_requests += 1

    def _console(self, msg):
        if msg.type != "error":
            return
        text = msg.text
        location = msg.location or {}
        where = location.get("url", "")
        if self._allow_401 and "status of 401" in text:
            self.expected_401s.append(where)
            return
        self.errors.append(f"console error: {text} ({where})")

    def check_errors(self, step: str):
        if self.errors:
            raise Failure(f"{step}: the browser reported errors:\n  " + "\n  ".join(self.errors))

    def shot(self, page: Page, name: str):
        path = self.artifacts / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"  screenshot {path}")

    def close(self):
        for context in self.contexts:
            with contextlib.suppress(PlaywrightError):
                context.close()


# --- steps shared by the scenarios ---------------------------------------------------------


def settle(page: Page, timeout=TIMEOUT_MS):
    """Waits until the page shows no loading state: nothing `aria-busy`, no loading line."""
    page.wait_for_function(
        "() => !document.querySelector('main [aria-busy=\"true\"], main .loading')",
        timeout=timeout,
    )


def assert_fits(s: Session, page: Page, name: str):
    """At phone width nothing may make the whole page scroll sideways."""
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    if overflow > 1:
        s.shot(page, f"{name}-overflow")
        raise Failure(f"{name}: the page is {overflow}px wider than the {page.viewport_size['width']}px viewport")


def sign_in(s: Session, page: Page, key: str | None = None):
    with s.expecting_401():
        page.goto(f"{s.base}/")
        field = page.get_by_label("API key")
        expect(field).to_be_visible()
        expect(field).to_have_attribute("type", "password")
    field.fill(key or s.args.api_key)
    # A refused key is a 401 too: say what the console showed instead of timing out.
    with s.expecting_401():
        page.get_by_role("button", name="Sign in").click()
        outcome = page.locator("main h1:text-is('Home'), #signin-message .notice.error").first
        outcome.wait_for()
        if outcome.evaluate("el => el.tagName") != "H1":
            raise Failure(f"signing in with the given key was refused: {outcome.inner_text()!r}")
    expect(page.get_by_role("heading", level=1, name="Home")).to_be_visible()
    # The key must not stay in the page once it has been exchanged.
    if page.locator("#api-key").count():
        raise Failure("the sign-in field is still in the page after signing in")
    settle(page)


# WCAG 2.1 levels A and AA, as axe-core (bundled by the axe-playwright-python wheel) checks them:
# contrast, names and labels, ARIA use, landmarks, language, and so on.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def check_accessibility(s: Session, page: Page, name: str):
    """axe-core over the page as it is shown: any WCAG A/AA violation fails the scenario."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS},
                                       "resultTypes": ["violations"]})
    violations = results.response["violations"]
    s.accessibility_checks += 1
    if violations:
        lines = []
        for v in violations:
            targets = "; ".join(", ".join(n["target"]) for n in v["nodes"][:5])
            lines.append(f"{v['id']} ({v['impact']}): {v['help']} — {targets}")
        raise Failure(f"{name}: WCAG 2.1 AA violations (axe-core):\n  " + "\n  ".join(lines))


def open_nav(page: Page, name: str):
    """Follows a main navigation link, opening the phone menu first when it is collapsed."""
    menu = page.locator("#menu-button")
    if menu.is_visible() and menu.get_attribute("aria-expanded") != "true":
        menu.click()
        expect(menu).to_have_attribute("aria-expanded", "true")
    page.locator("#nav").get_by_role("link", name=name, exact=True).click()
    expect(page.locator(f"#nav a[aria-current=page]")).to_have_text(name)


def check_skip_link(page: Page):
    """The first Tab reaches a visible skip link, and following it puts focus on the content."""
    # A fresh load (still signed in: the cookie) starts keyboard navigation at the top.
    page.reload()
    expect(page.locator("main h1")).to_be_visible()
    settle(page)
    page.keyboard.press("Tab")
    skip = page.locator("#skip-link")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    if not box or box["y"] < 0:
        raise Failure("the skip link is not visible when it has the keyboard focus")
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


def is_admin(page: Page) -> bool:
    """Whether the console offers the Admin page (the menu may be collapsed on a phone)."""
    return page.locator("li[data-admin-only]").get_attribute("hidden") is None


def hash_of(page: Page) -> str:
    return page.evaluate("() => location.hash")


def wait_hash(page: Page, pattern: str, timeout=TIMEOUT_MS) -> str:
    page.wait_for_function(
        "(p) => new RegExp(p).test(location.hash)", arg=pattern, timeout=timeout)
    return hash_of(page)


# --- scenarios -----------------------------------------------------------------------------


def scenario_pages(s: Session):
    """Every page at desktop and phone width, then sign out."""
    for viewport, suffix in ((DESKTOP, "1280"), (PHONE, "390")):
        page = s.page(viewport)
        sign_in(s, page)
        admin = is_admin(page)

        def visit(name, shot, check=None):
            settle(page)
            if check:
                check()
            if viewport is PHONE:
                assert_fits(s, page, shot)
            s.shot(page, shot)
            check_accessibility(s, page, shot)
            s.check_errors(shot)

        expect(page.locator("#license-status")).to_be_visible()
        visit("Home", f"home-{suffix}")

        open_nav(page, "Chat")
        visit("Chat", f"chat-{suffix}", lambda: expect(page.get_by_label("Your question")).to_be_visible())

        open_nav(page, "Scans")
        visit("Scans", f"scans-{suffix}", lambda: expect(page.get_by_label("Regions")).to_be_visible())

        open_nav(page, "Documents")
        visit("Documents", f"documents-{suffix}", lambda: expect(page.get_by_label("File")).to_be_visible())

        open_nav(page, "Knowledge base")
        visit("Knowledge base", f"kb-{suffix}",
              lambda: expect(page.locator(".cards a").first).to_be_visible())
        check_skip_link(page)
        page.locator(".cards a").first.click()
        wait_hash(page, r"^#/kb/frameworks/")
        visit("framework", f"kb-framework-{suffix}",
              lambda: expect(page.locator("#control-tree .control-link").first).to_be_visible())
        control = page.locator("#control-tree .control-link").first
        control_text = control.locator(".native-id").inner_text()
        control.click()
        wait_hash(page, r"^#/kb/controls/")
        visit("control", f"kb-control-{suffix}",
              lambda: expect(page.locator("#control-title")).to_contain_text(control_text))

        open_nav(page, "Knowledge base")
        settle(page)
        page.get_by_label("Search the knowledge base").fill("encryption at rest")
        page.get_by_role("button", name="Search", exact=True).click()
        wait_hash(page, r"^#/kb/search\?")
        visit("search", f"kb-search-{suffix}",
              lambda: expect(page.locator(".results li").first).to_be_visible())
        if viewport is DESKTOP:
            # The framework filter: every control hit then belongs to the framework chosen
            # (checks and remediations carry no framework of their own).
            choice = page.get_by_label("Framework").locator("option[value^='pci-dss']")
            expect(choice).to_have_count(1)
            key = choice.get_attribute("value")
            page.get_by_label("Framework").select_option(key)
            page.get_by_role("button", name="Search", exact=True).click()
            wait_hash(page, r"framework=pci-dss")
            try:
                page.wait_for_function(
                    """(key) => {
                        const shown = [...document.querySelectorAll('.results li span.muted')]
                            .map((span) => span.textContent.trim());
                        return shown.length > 0 && shown.every((fw) => fw === key);
                    }""", arg=key)
            except PlaywrightError:
                shown = page.locator(".results li span.muted").all_inner_texts()
                raise Failure(f"searching within {key} listed hits of {sorted(set(shown))}")
            visit("search filtered", f"kb-search-filtered-{suffix}")

        if admin:
            open_nav(page, "Admin")
            visit("Admin", f"admin-{suffix}", lambda: expect(page.locator("#keys-h")).to_be_visible())
        else:
            print("  (a user key: the Admin page is hidden, as it should be)")

        page.locator("#sign-out").click()
        expect(page.get_by_label("API key")).to_be_visible()
        expect(page.locator("#nav")).to_be_hidden()
        s.shot(page, f"signed-out-{suffix}")
        check_accessibility(s, page, f"signed-out-{suffix}")
        # The cookie is gone: a reload stays signed out.
        with s.expecting_401():
            page.reload()
            expect(page.get_by_label("API key")).to_be_visible()
        s.check_errors(f"sign out ({suffix})")


def new_conversation(s: Session) -> Page:
    """Signs in on a desktop page and opens a new, empty chat conversation."""
    page = s.page(DESKTOP)
    sign_in(s, page)
    open_nav(page, "Chat")
    settle(page)
    page.locator("#new-conversation").click()
    wait_hash(page, r"^#/chat/[0-9a-f-]{36}$")
    settle(page)
    return page


def scenario_chat(s: Session):
    """Ask a question, watch the answer stream in, follow a citation."""
    page = new_conversation(s)
    # Records every value the answer's rendered length takes, one per render: each record's old
    # value is the length before that render (records are delivered in batches, so reading the
    # live attribute would only show the last one of a batch).
    page.evaluate("""() => {
        window.__answerLengths = [];
        new MutationObserver((records) => {
            for (const r of records) {
                if (r.attributeName === 'data-length' && r.target.closest('.message') === document.querySelector('.message:last-child')) {
                    window.__answerLengths.push(Number(r.oldValue));
                }
            }
        }).observe(document.getElementById('messages'), { subtree: true, attributes: true, attributeOldValue: true, attributeFilter: ['data-length'] });
    }""")
    page.get_by_label("Your question").fill(QUESTION)
    page.get_by_role("button", name="Ask", exact=True).click()
    answer = page.locator(".message .answer").last
    expect(answer).to_have_attribute("data-state", re.compile("streaming|done"), timeout=CHAT_TIMEOUT_MS)
    try:
        expect(answer).to_have_attribute("data-state", "done", timeout=CHAT_TIMEOUT_MS)
    except AssertionError:
        s.shot(page, "chat")
        raise Failure(f"the answer did not finish: state {answer.get_attribute('data-state')!r}, "
                      f"text {answer.inner_text()[:300]!r}")
    lengths = page.evaluate("() => window.__answerLengths") + [int(answer.get_attribute("data-length") or 0)]
    deltas = int(answer.get_attribute("data-deltas") or 0)
    grew = [n for i, n in enumerate(lengths) if n > 0 and (i == 0 or n > lengths[i - 1])]
    print(f"  answer rendered in {deltas} deltas; lengths seen {lengths[:12]}{'…' if len(lengths) > 12 else ''}")
    if deltas < 2 or len(grew) < 2:
        raise Failure(f"the answer did not grow progressively (deltas {deltas}, lengths {lengths})")
    if lengths != sorted(lengths):
        raise Failure(f"the rendered answer shrank while streaming: {lengths}")
    citations = answer.locator('a[href^="#/kb/controls/"]')
    if citations.count() < 1:
        raise Failure("the answer has no citation link to a KB control page")
    s.shot(page, "chat")
    check_accessibility(s, page, "chat answer")
    s.check_errors("chat answer")

    # The conversation appears in the list with its question.
    expect(page.locator(".conversation-list a[aria-current=page]")).to_be_visible()

    link = answer.locator("a.citation").first
    href = link.get_attribute("href")
    label = link.inner_text()
    link.click()
    wait_hash(page, r"^#/kb/controls/")
    if hash_of(page) != href:
        raise Failure(f"the citation link led to {hash_of(page)!r}, not {href!r}")
    settle(page)
    expect(page.locator("#checks-h")).to_be_visible()
    native = label.split(" ", 1)[0]
    expect(page.locator("#control-title")).to_contain_text(native)
    s.shot(page, "chat-citation-control")
    s.check_errors("citation")


def scenario_chat_resume(s: Session):
    """The answer's connection drops after a few events: the console resumes where it stopped.

    The POST's event stream is cut short in the browser (Playwright serves the real response,
    truncated after the third `delta`, as a proxy that drops the connection would), so the
    console must follow the message's events with `Last-Event-ID` and end with exactly the
    server's answer: nothing lost, nothing shown twice, no second question asked (billed).
    """
    page = new_conversation(s)

    cut = {}
    posts = []
    resumes = []

    def truncate(route):
        request = route.request
        if request.method != "POST":
            route.continue_()
            return
        posts.append(request.url)
        response = route.fetch()
        events = response.text().split("\n\n")
        kept, deltas = [], 0
        for event in events:
            kept.append(event)
            if any(line.split(":", 1)[-1].strip() == "delta"
                   for line in event.splitlines() if line.startswith("event:")):
                deltas += 1
            if deltas == 3:
                break
        if deltas < 3:
            cut["error"] = f"the answer had only {deltas} delta events; nothing to cut"
            route.fulfill(response=response)
            return
        ids = [line[3:].strip() for e in kept for line in e.splitlines() if line.startswith("id:")]
        starts = [e for e in kept if "event: start" in e or "event:start" in e]
        cut["last_id"] = ids[-1] if ids else None
        cut["start"] = starts[0] if starts else ""
        cut["events"] = len(kept)
        cut["total"] = len([e for e in events if e.strip()])
        route.fulfill(status=response.status, headers=response.headers, body="\n\n".join(kept) + "\n\n")

    def on_request(request):
        if re.search(r"/api/v1/chat/messages/[0-9a-f-]{36}/events$", request.url):
            resumes.append(request.headers.get("last-event-id"))

    page.route(re.compile(r".*/api/v1/chat/conversations/[0-9a-f-]{36}/messages$"), truncate)
    page.on("request", on_request)
    page.get_by_label("Your question").fill(QUESTION)
    page.get_by_role("button", name="Ask", exact=True).click()
    answer = page.locator(".message .answer").last
    try:
        expect(answer).to_have_attribute("data-state", "done", timeout=CHAT_TIMEOUT_MS)
    except AssertionError:
        s.shot(page, "chat-resume")
        raise Failure(f"the answer did not finish after the dropped connection: state "
                      f"{answer.get_attribute('data-state')!r}, text {answer.inner_text()[:300]!r}")
    if "error" in cut:
        raise Failure(cut["error"])
    if not cut:
        raise Failure("the question's stream never passed through the truncating route")
    print(f"  stream cut after {cut['events']} of {cut['total']} events (last id {cut['last_id']}); "
          f"resumed with Last-Event-ID {resumes}")
    if len(posts) != 1:
        raise Failure(f"the console asked the question {len(posts)} times instead of resuming")
    if not resumes or resumes[0] != cut["last_id"]:
        raise Failure(f"the console did not resume from event {cut['last_id']!r}: resume requests "
                      f"carried Last-Event-ID {resumes}")
    message_id = re.search(r'"message_id"\s*:\s*"([0-9a-f-]{36})"', cut["start"])
    if not message_id:
        raise Failure(f"the start event names no message: {cut['start']!r}")
    stored = page.evaluate(
        """async (id) => {
            const r = await fetch(`/api/v1/chat/messages/${id}`, { credentials: 'same-origin' });
            const m = await r.json();
            return { status: r.status, length: (m.answer || '').length, citations: (m.citations || []).length };
        }""", message_id.group(1))
    shown = int(answer.get_attribute("data-length") or 0)
    if stored["status"] != 200 or shown != stored["length"]:
        raise Failure(f"the console shows {shown} characters of answer, the server stored "
                      f"{stored['length']} (GET status {stored['status']})")
    shown_citations = answer.locator("a.citation").count()
    if shown_citations != stored["citations"]:
        raise Failure(f"the console lists {shown_citations} sources, the answer has {stored['citations']}")
    s.shot(page, "chat-resumed")
    s.check_errors("resumed answer")


def scenario_units(s: Session):
    """The console's pure modules (Markdown, SSE parsing, DOM helpers) unit-tested in the page.

    tests/browser/units.js imports the modules the binary serves and returns its failures:
    hostile and generated Markdown must never yield an element, attribute or link the renderer
    does not write itself, and the event-stream parser must give the same events however the
    bytes are cut.
    """
    page = s.page(DESKTOP)
    with s.expecting_401():
        page.goto(f"{s.base}/")
        expect(page.get_by_label("API key")).to_be_visible()
    source = (Path(__file__).parent / "units.js").read_text(encoding="utf-8")
    failures = page.evaluate(source)
    if failures:
        raise Failure("console unit checks failed:\n  " + "\n  ".join(failures))
    print("  markdown, snippet, h(), escapeHtml and readEvents checks hold")
    s.check_errors("unit checks")


def scenario_scan(s: Session):
    """Start a scan of the server's own account, follow it to the end, read the results."""
    page = s.page(DESKTOP)
    sign_in(s, page)
    open_nav(page, "Scans")
    settle(page)
    page.get_by_label("Regions").fill("us-east-1")
    page.get_by_label("This deployment’s own account").check()
    s.shot(page, "scans")
    page.locator("#start-scan").click()
    scan_hash = wait_hash(page, r"^#/scans/[0-9a-f-]{36}")
    print(f"  started {scan_hash}")
    # Records each progress percentage shown while the scan runs.
    page.evaluate("""() => {
        window.__progress = [];
        const note = () => {
            const t = document.querySelector('#scan-progress .progress-text');
            if (t && window.__progress[window.__progress.length - 1] !== t.textContent) window.__progress.push(t.textContent);
        };
        note();
        new MutationObserver(note).observe(document.querySelector('main'), { subtree: true, childList: true, characterData: true });
    }""")
    status = page.locator("#scan-status")
    expect(status).to_be_visible()
    s.shot(page, "scan-started")
    try:
        expect(status).to_have_attribute(
            "data-status", re.compile("succeeded|failed|cancelled|interrupted"), timeout=SCAN_TIMEOUT_MS)
    except AssertionError:
        s.shot(page, "scan")
        raise Failure(f"the scan did not end within {SCAN_TIMEOUT_MS // 1000} s: "
                      f"status {status.get_attribute('data-status')!r}")
    ended = status.get_attribute("data-status")
    if ended != "succeeded":
        s.shot(page, "scan")
        raise Failure(f"the scan ended {ended!r}: {page.locator('main .notice.error').all_inner_texts()}")
    expect(page.locator("#scan-progress .progress-text")).to_have_text("100 %")
    progress = page.evaluate("() => window.__progress")
    print(f"  progress shown: {progress}")
    numbers = [int(p.split()[0]) for p in progress if p.strip()]
    if numbers != sorted(numbers):
        raise Failure(f"the progress went backwards: {progress}")

    # The findings table (re-drawn once the scan ended).
    settle(page)
    table = page.locator(".tab-body table")
    expect(table).to_be_visible()
    rows = table.locator("tbody tr").count()
    counts = page.locator("#scan-counts").inner_text()
    print(f"  {rows} findings on the first page; {counts}")
    if rows < 1:
        raise Failure("the findings table is empty after a finished scan")
    for fmt in ("json", "csv", "ocsf", "asff"):
        href = page.locator(f"a.export[data-format={fmt}]").get_attribute("href")
        if not href or f"format={fmt}" not in href:
            raise Failure(f"no {fmt} export link")
    s.shot(page, "scan")
    check_accessibility(s, page, "scan results")

    # A filter: only failures.
    page.get_by_role("form", name="Filter findings").get_by_label("Status").select_option("fail")
    wait_hash(page, r"status=fail")
    settle(page)
    statuses = page.locator(".tab-body tbody td[data-label=Status]").all_inner_texts()
    if any(t.strip() != "fail" for t in statuses):
        raise Failure(f"the status filter let other statuses through: {set(statuses)}")
    s.shot(page, "scan-failures")

    page.locator("#tab-compliance").click()
    wait_hash(page, r"/compliance")
    settle(page)
    expect(page.locator("#compliance")).to_be_visible()
    expect(page.locator("#compliance table")).to_be_visible()
    print(f"  compliance: {page.locator('.compliance-summary').inner_text()}")
    s.shot(page, "scan-compliance")
    check_accessibility(s, page, "scan compliance")
    s.check_errors("scan")
    if s.args.moto_endpoint:
        scan_difference(s, page, scan_hash)


def scenario_scan_cancel(s: Session):
    """A scan whose AWS calls hang (the server's AWS Config endpoint never answers): cancel it
    from the keyboard, see it end `cancelled`, then delete it."""
    page = s.page(DESKTOP)
    sign_in(s, page)
    open_nav(page, "Scans")
    settle(page)
    page.get_by_label("Regions").fill("us-east-1")
    page.get_by_label("This deployment’s own account").check()
    page.locator("#start-scan").click()
    wait_hash(page, r"^#/scans/[0-9a-f-]{36}")
    status = page.locator("#scan-status")
    expect(status).to_have_attribute("data-status", "running")
    cancel = page.locator("#cancel-scan")
    expect(cancel).to_have_text("Cancel scan")
    # From the keyboard: the summary is redrawn on every progress event and must keep the focus.
    cancel.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".toast").last).to_contain_text("Cancelling")
    try:
        expect(status).to_have_attribute("data-status", "cancelled", timeout=SCAN_TIMEOUT_MS)
    except AssertionError:
        s.shot(page, "scan-cancel")
        raise Failure(f"the cancelled scan did not end cancelled: {status.get_attribute('data-status')!r}")
    expect(cancel).to_have_count(0)
    settle(page)
    # Nothing in the summary may still speak of a scan about to start.
    summary = page.locator("#scan-summary-h").locator("xpath=..").inner_text()
    if "starting" in summary or "when the scan starts" in summary:
        raise Failure(f"the cancelled scan's summary still reads as starting: {summary!r}")
    s.shot(page, "scan-cancelled")
    check_accessibility(s, page, "cancelled scan")
    page.locator("#delete-scan").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete this scan?")
    dialog.get_by_role("button", name="Delete").click()
    wait_hash(page, r"^#/scans$")
    expect(page.locator(".toast").last).to_contain_text("Scan deleted")
    s.check_errors("scan cancel")


def run_scan_to_end(s: Session, page: Page) -> str:
    """Starts a scan of the deployment's own account in us-east-1; returns its hash once ended."""
    open_nav(page, "Scans")
    settle(page)
    page.get_by_label("Regions").fill("us-east-1")
    page.get_by_label("This deployment’s own account").check()
    page.locator("#start-scan").click()
    scan_hash = wait_hash(page, r"^#/scans/[0-9a-f-]{36}")
    status = page.locator("#scan-status")
    expect(status).to_have_attribute("data-status", "succeeded", timeout=SCAN_TIMEOUT_MS)
    return scan_hash


def scan_difference(s: Session, page: Page, first_hash: str):
    """An SSH port opened to the world between two scans is a new failure in the difference."""
    import boto3  # installed with moto by scripts/test

    ec2 = boto3.client("ec2", endpoint_url=s.args.moto_endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    group = ec2.create_security_group(GroupName="console-diff-open-ssh", Description="opened between scans")
    group_id = group["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    second = run_scan_to_end(s, page)
    page.locator("#tab-diff").click()
    wait_hash(page, r"/diff")
    settle(page)
    choose = page.get_by_label("Compare with")
    expect(choose).to_be_visible()
    first_id = first_hash.split("/")[2]
    if choose.input_value() != first_id:
        raise Failure(f"the difference is not against the earlier scan {first_id}: {choose.input_value()!r}")
    new = page.locator(".tab-body section").filter(has=page.get_by_role("heading", name=re.compile(r"^New failures")))
    expect(new.locator("tbody tr").first).to_be_visible()
    rows = new.locator("tbody tr").all_inner_texts()
    print(f"  {len(rows)} new failures against the first scan ({second})")
    if not any(group_id in r for r in rows):
        s.shot(page, "scan-diff")
        raise Failure(f"the group opened between the scans ({group_id}) is not a new failure: {rows}")
    s.shot(page, "scan-diff")
    check_accessibility(s, page, "scan difference")
    s.check_errors("scan difference")


def scenario_document(s: Session):
    """Upload the fixture, watch it being analysed, read the report, export it."""
    fixture = s.args.fixture
    if not fixture or not Path(fixture).is_file():
        raise Failure(f"the document scenario needs --fixture PATH to a file (got {fixture!r})")
    page = s.page(DESKTOP)
    sign_in(s, page)
    open_nav(page, "Documents")
    settle(page)
    page.get_by_label("File").set_input_files(fixture)
    # Records the upload percentages shown.
    page.evaluate("""() => {
        window.__upload = [];
        new MutationObserver(() => {
            const p = document.getElementById('upload-progress');
            if (p && !p.hidden) window.__upload.push(Number(p.dataset.percent));
        }).observe(document.getElementById('upload-progress'), { attributes: true, attributeFilter: ['data-percent', 'hidden'] });
    }""")
    page.locator("#upload").click()
    result = page.locator("#upload-result")
    expect(result).to_be_visible(timeout=DOCUMENT_TIMEOUT_MS)
    expect(page.locator("#upload-progress")).to_have_attribute("data-percent", "100")
    expect(page.locator("#upload-progress")).to_contain_text("100 %")
    print(f"  upload progress shown: {page.evaluate('() => window.__upload')}")
    doc_id = result.get_attribute("data-document-id")
    s.shot(page, "documents-uploaded")

    row_status = page.locator(f".doc-status[data-document-id='{doc_id}']")
    try:
        expect(row_status).to_have_attribute("data-status", re.compile("analyzed|failed"), timeout=DOCUMENT_TIMEOUT_MS)
    except AssertionError:
        s.shot(page, "documents")
        raise Failure(f"the document was not analysed in time: {row_status.get_attribute('data-status')!r}")
    if row_status.get_attribute("data-status") != "analyzed":
        s.shot(page, "documents")
        raise Failure("the document analysis failed")
    s.shot(page, "documents")

    page.locator(f"a.doc-link[data-document-id='{doc_id}']").click()
    wait_hash(page, rf"^#/documents/{doc_id}$")
    settle(page)
    expect(page.locator("#doc-status")).to_have_attribute("data-status", "analyzed")
    expect(page.locator("#gaps-h")).to_be_visible()
    expect(page.locator("#findings-h")).to_be_visible()
    findings = page.locator(".report tbody tr").count()
    gaps = page.locator(".report .gaps li").count()
    print(f"  report: {findings} findings, {gaps} gaps listed")
    if findings < 1:
        raise Failure("the report shows no findings for the fixture")
    if gaps < 1:
        raise Failure("the report shows no gaps for the fixture")
    s.shot(page, "document")
    check_accessibility(s, page, "document report")

    with page.expect_download(timeout=TIMEOUT_MS) as info:
        page.locator("#export-markdown").click()
    download = info.value
    target = Path(s.artifacts) / (download.suggested_filename or "report.md")
    download.save_as(str(target))
    text = target.read_text(encoding="utf-8", errors="replace")
    print(f"  exported {target.name}: {len(text)} characters")
    if not target.name.endswith(".md") or len(text) < 50 or "#" not in text:
        raise Failure(f"the Markdown export does not look like the report: {target.name}, {text[:200]!r}")
    s.check_errors("document")


def create_and_copy_key(s: Session, page: Page) -> str:
    """Admin: create a user key with the form, copy it with the Copy button (the clipboard must
    hold exactly the key shown), close it (it must leave the page), find it listed."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=s.base)
    create = page.get_by_role("button", name="Create key")
    # An empty name is refused in the page, saying what to do, before any request.
    page.locator("#key-name").fill("   ")
    create.click()
    expect(page.get_by_role("alert").filter(has_text="Give the key a name")).to_be_visible()
    page.locator("#key-name").fill("console copy test")
    page.locator("#key-scope").select_option("user")
    create.click()
    shown = page.locator("#new-key")
    expect(shown).to_be_visible()
    key = shown.input_value()
    if not key.startswith("co_"):
        raise Failure(f"the new key shown is not an API key: {key!r}")
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.locator(".toast").last).to_contain_text("copied")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    if copied != key:
        raise Failure(f"Copy put {copied!r} on the clipboard, not the key shown ({key[:8]}…)")
    s.shot(page, "admin-key-created")
    check_accessibility(s, page, "new key shown")
    page.get_by_role("button", name="Done", exact=True).click()
    expect(page.locator("#new-key")).to_have_count(0)
    if key in page.content():
        raise Failure("the new key is still somewhere in the page after Done")
    row = page.locator("tr", has_text="console copy test")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("active")
    return key


def scenario_revoke(s: Session):
    """Create a key (and copy it), revoke it, then revoke the very key the session uses: the
    console must return to sign-in, saying why."""
    page = s.page(DESKTOP)
    sign_in(s, page)
    if not is_admin(page):
        raise Failure("the revoke scenario needs an admin key: the Admin page is not offered")
    open_nav(page, "Admin")
    settle(page)
    new_key = create_and_copy_key(s, page)
    # The copied key signs in (a second browser context: its own cookie), as a user.
    other = s.page(DESKTOP)
    sign_in(s, other, new_key)
    if is_admin(other):
        raise Failure("a user key created in the console is offered the Admin page")
    # Revoking it from the admin's list ends it at once (the other page's next request is
    # refused: a 401 is expected from here on).
    with s.expecting_401():
        page.get_by_role("button", name="Revoke key console copy test").click()
        page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
        expect(page.locator("tr", has_text="console copy test")).to_contain_text("revoked")
        other.reload()
        expect(other.get_by_label("API key")).to_be_visible()
    button = page.locator("button.revoke[data-current=true]")
    expect(button).to_have_count(1)
    s.shot(page, "admin")
    button.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("signs you out")
    s.shot(page, "admin-revoke-confirm")
    check_accessibility(s, page, "revoke dialog")
    with s.expecting_401():
        dialog.get_by_role("button", name="Revoke").click()
        expect(page.get_by_label("API key")).to_be_visible()
        reason = page.locator("#signin-reason")
        expect(reason).to_be_visible()
        expect(reason).to_contain_text("revoked")
        expect(page.locator("#nav")).to_be_hidden()
        s.shot(page, "signin-revoked")
        server_code = reason.get_attribute("data-server-code")
        print(f"  sign-in says: {reason.inner_text()!r} (the API answered {server_code})")
        if server_code != "api_key_revoked":
            raise Failure(f"after the revocation the API answered 401 {server_code!r}, not api_key_revoked")
        # The key really is dead: signing in with it again is refused, saying so.
        page.get_by_label("API key").fill(s.args.api_key)
        page.get_by_role("button", name="Sign in").click()
        refusal = page.locator("#signin-message .notice.error")
        expect(refusal).to_be_visible()
        expect(refusal).to_contain_text(re.compile("revoked", re.I))
        s.shot(page, "signin-revoked-again")
    if not s.expected_401s:
        raise Failure("no request was refused after the revocation, so nothing proved the key was dead")
    s.check_errors("revoke")


RUNNERS = {
    "pages": scenario_pages,
    "chat": scenario_chat,
    "chat-resume": scenario_chat_resume,
    "scan": scenario_scan,
    "scan-cancel": scenario_scan_cancel,
    "document": scenario_document,
    "revoke": scenario_revoke,
    "units": scenario_units,
}


def chromium_path() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    print("error: no Chromium at /usr/bin/chromium (apt-get install -y chromium, or set CHROMIUM)",
          file=sys.stderr)
    sys.exit(2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--artifacts", required=True, help="directory for screenshots and downloads")
    parser.add_argument("--fixture", help="the document to upload (document scenario)")
    parser.add_argument("--moto-endpoint", help="the moto server the scan scenario's server scans: "
                        "it then changes the account and checks the difference between two scans")
    args = parser.parse_args(argv)
    Path(args.artifacts).mkdir(parents=True, exist_ok=True)
    executable = chromium_path()

    started = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        s = Session(browser, args)
        try:
            print(f"scenario {args.scenario} against {args.base_url}")
            RUNNERS[args.scenario](s)
            s.check_errors("end of scenario")
        except Failure as failure:
            _failure_shot(s)
            print(f"FAIL {args.scenario}: {failure}", file=sys.stderr)
            return 1
        except (AssertionError, PlaywrightError) as err:
            _failure_shot(s)
            details = "".join(traceback.format_exception_only(type(err), err)).strip()
            print(f"FAIL {args.scenario}: {details}", file=sys.stderr)
            if s.errors:
                print("  browser errors:\n  " + "\n  ".join(s.errors), file=sys.stderr)
            print("".join(traceback.format_tb(err.__traceback__)[-3:]), file=sys.stderr)
            return 1
        finally:
            s.close()
            browser.close()
    print(f"ok {args.scenario} in {time.monotonic() - started:.1f} s ({s.api_requests} API requests, "
          f"{s.accessibility_checks} pages checked with axe-core)")
    return 0


def _failure_shot(s: Session):
    for context in reversed(s.contexts):
        for page in context.pages:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(Path(s.artifacts) / "failure.png"), full_page=True)
                print(f"  screenshot {Path(s.artifacts) / 'failure.png'}", file=sys.stderr)
                return


if __name__ == "__main__":
    sys.exit(main())
