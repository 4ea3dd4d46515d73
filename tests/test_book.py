"""The built book in a real browser: headless Chromium opens every page of the HTML book.

For each page: it has a title, its figures load, its math was rendered by MathJax (served from the
book itself, no CDN), and every internal link points to a file and anchor that exist. Plus the
worked examples of the chapters are visible in the rendered text.

The book is read from $GPT_LAB_BOOK_HTML (default `_build/html`); `make test` builds the fast book
first and points it to `_build/fast/_build/html`. Without a built book (or without Chromium) the
tests skip, except in CI ($CI=true), where they fail.

Chromium is driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`), so no
WebDriver, Selenium or browser download is needed: only Debian's `chromium` package.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("GPT_LAB_BOOK_HTML", ROOT / "_build" / "html"))
if not HTML.is_absolute():
    HTML = ROOT / HTML
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--window-size=1280,900",
]
PAGE_TIMEOUT = 30.0  # seconds for one page to load, typeset its math and load its images


def _unavailable(reason: str):
    """Skip locally; fail in CI, where the book and the browser must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser test must run)")
    pytest.skip(reason)


def _pages() -> list[str]:
    """Every HTML page of the book, relative to HTML (the theme's assets and sources excluded)."""
    if not (HTML / "index.html").is_file():
        return []
    skip = ("_static", "_sources", "_images")
    return sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
                  if not p.relative_to(HTML).parts[0] in skip)


PAGES = _pages()
REDIRECT = re.compile(r"<meta\s+http-equiv=\"refresh\"\s+content=\"\d+;\s*url=([^\"]+)\"", re.I)


def _redirect_of(page: str) -> str | None:
    """The target of a redirect page (Jupyter Book's index.html points to the root chapter)."""
    match = REDIRECT.search((HTML / page).read_text(encoding="utf-8", errors="replace")[:2000])
    return match.group(1) if match else None
# Pages whose source makes a figure (matplotlib or a figure directive): they must show one.
FIGURE_SOURCE = re.compile(r"plt\.|viz\.(plot_|heatmap)|^```\{(figure|image)\}|^\s+figure:", re.M)


def _source_of(page: str) -> Path | None:
    """The Markdown or notebook source of a built page, if it is in the repository."""
    stem = ROOT / Path(page).with_suffix("")
    if page == "index.html":   # the root page is the toc's root
        stem = ROOT / "book" / "intro"
    for ext in (".md", ".ipynb"):
        if stem.with_suffix(ext).is_file():
            return stem.with_suffix(ext)
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe` (fds 3 and 4)."""

    def __init__(self, chromium: str):
        self.profile = tempfile.mkdtemp(prefix="gpt_lab_chromium_")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes():  # in the child, before exec: the protocol's fds are 3 (in) and 4 (out)
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes, close_fds=False,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = False,
             timeout: float = PAGE_TIMEOUT) -> dict:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            if "method" in reply:
                self._events.append(reply)

    def open(self, url: str) -> None:
        """Navigate the page to `url` and wait for its load event."""
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + PAGE_TIMEOUT
        while not any(e["method"] == "Page.loadEventFired" for e in self._events):
            message = self._read_message(deadline)
            if "method" in message:
                self._events.append(message)

    def evaluate(self, expression: str) -> object:
        """Evaluate JavaScript in the page (awaiting a promise) and return its JSON value."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True, "timeout": PAGE_TIMEOUT * 1000}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


# Runs in the page once it has loaded: waits for MathJax and the images, then reports what a
# reader would see.
INSPECT_PAGE = """
(async () => {
  const until = (check) => new Promise(resolve => {
    const start = Date.now();
    const poll = () => (check() || Date.now() - start > 20000) ? resolve() : setTimeout(poll, 50);
    poll();
  });
  await until(() => document.readyState === "complete");
  if (document.querySelector(".math")) {
    await until(() => window.MathJax && MathJax.startup && MathJax.startup.promise);
    if (window.MathJax && MathJax.startup) { await MathJax.startup.promise; }
  }
  const content = document.querySelector("main article") || document.querySelector("main") || document.body;
  const images = [...content.querySelectorAll("img")];
  await Promise.all(images.map(img => img.complete ? null :
    new Promise(resolve => { img.onload = img.onerror = resolve; })));
  const mathjax = document.querySelector("script[src*='mathjax' i], script[src*='tex-chtml']");
  return {
    url: location.href,
    title: document.title,
    h1: ([...content.querySelectorAll("h1")].map(h => h.textContent.replace("#", "").trim())
          .find(text => text) || ""),
    math: content.querySelectorAll(".math").length,
    mjx: content.querySelectorAll("mjx-container").length,
    mjxErrors: [...content.querySelectorAll("mjx-merror")].map(e => e.textContent),
    mathjaxSrc: mathjax ? mathjax.src : null,
    images: images.map(img => ({src: img.getAttribute("src"), width: img.naturalWidth, height: img.naturalHeight})),
    links: [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href")),
    ids: [...document.querySelectorAll("[id], a[name]")].map(e => e.id || e.getAttribute("name")),
    text: content.innerText,
    // what the executed cells printed, and any output the notebook renderer marked as an error
    outputs: [...content.querySelectorAll(".cell_output, .output")].map(e => e.innerText),
    errorOutputs: [...content.querySelectorAll(".output.traceback, .output.error, .output.stderr, " +
                   "div.traceback, pre.traceback")].map(e => e.innerText.slice(0, 500)),
  };
})()
"""


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    """Open every page once in headless Chromium; page path -> what the page showed."""
    if not PAGES:
        _unavailable(f"no built book at {HTML} (run `make book-fast`, or set GPT_LAB_BOOK_HTML)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _unavailable("chromium is not installed (apt-get install chromium)")
    browser = DevTools(chromium)
    seen = {}
    try:
        for page in PAGES:
            if _redirect_of(page):
                continue  # checked without the browser: see test_redirects
            url = (HTML / page).as_uri()
            browser.open(url)
            seen[page] = browser.evaluate(INSPECT_PAGE)
            assert seen[page]["url"] == url, f"the browser shows {seen[page]['url']}, not {url}"
    finally:
        browser.close()
    return seen


def test_book_is_built():
    if not PAGES:
        _unavailable(f"no built book at {HTML} (run `make book-fast`, or set GPT_LAB_BOOK_HTML)")
    assert "index.html" in PAGES
    chapters = [p for p in PAGES if p.startswith("book/")]
    assert len(chapters) >= 4, f"expected the chapters under book/, found {chapters}"


def test_mathjax_is_served_by_the_book():
    """MathJax comes from _static (copied at build time), so math renders offline."""
    if not PAGES:
        _unavailable(f"no built book at {HTML}")
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file()
    for page in PAGES:
        html = (HTML / page).read_text(encoding="utf-8")
        remote = re.findall(r"<script[^>]+src=\"(https?:[^\"]*mathjax[^\"]*)\"", html, flags=re.I)
        assert not remote, f"{page} loads MathJax from the network: {remote}"


def test_redirects():
    """index.html (a redirect, as Jupyter Book writes it) leads to an existing page."""
    if not PAGES:
        _unavailable(f"no built book at {HTML}")
    for page in PAGES:
        target = _redirect_of(page)
        if target:
            assert ((HTML / page).parent / target).is_file(), f"{page} redirects to a missing page {target}"


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(rendered, page):
    if page not in rendered:
        pytest.skip(f"{page} is a redirect to {_redirect_of(page)}")
    facts = rendered[page]
    # A title: the page's heading is in the browser's title.
    assert facts["h1"], f"{page}: no <h1> heading"
    assert facts["title"] and facts["h1"] in facts["title"], f"{page}: title {facts['title']!r} vs h1 {facts['h1']!r}"
    # Figures load (a broken image has naturalWidth 0), and a page whose source draws one shows one.
    broken = [img["src"] for img in facts["images"] if not img["width"] or not img["height"]]
    assert not broken, f"{page}: images that did not load: {broken}"
    source = _source_of(page)
    if source is not None and FIGURE_SOURCE.search(source.read_text(encoding="utf-8")):
        assert facts["images"], f"{page}: its source ({source.name}) makes a figure, but the page shows no image"
    # Math: every formula was typeset by MathJax, without TeX errors.
    if facts["math"]:
        assert facts["mathjaxSrc"] and facts["mathjaxSrc"].startswith("file:"), \
            f"{page}: MathJax not loaded from the book ({facts['mathjaxSrc']})"
        assert facts["mjx"] >= facts["math"], f"{page}: {facts['math']} formulas but {facts['mjx']} rendered by MathJax"
        assert not facts["mjxErrors"], f"{page}: MathJax errors {facts['mjxErrors']}"


# A Python error as a cell prints it: the traceback header, or "SomeError: message" at a line start.
PYTHON_ERROR = re.compile(r"Traceback \(most recent call last\)|^(?:\w+\.)*\w*(?:Error|Exception): ", re.M)


@pytest.mark.parametrize("page", PAGES)
def test_page_shows_no_python_error(rendered, page):
    """No executed cell shows a traceback or an error message (with allow_errors false a failing
    cell stops the build, but a cell can still print a caught exception's traceback)."""
    if page not in rendered:
        pytest.skip(f"{page} is a redirect to {_redirect_of(page)}")
    facts = rendered[page]
    assert not facts["errorOutputs"], f"{page}: error outputs on the page: {facts['errorOutputs']}"
    shown = [m.group(0) for out in facts["outputs"] for m in [PYTHON_ERROR.search(out)] if m]
    assert not shown, f"{page}: a cell output shows a Python error: {shown}"


def _toc_files() -> list[str]:
    """Every file named in _toc.yml (root and chapters), as book paths without a suffix."""
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    return re.findall(r"^\s*(?:-\s*)?(?:root|file):\s*(\S+)", toc, flags=re.M)


def test_every_toc_page_opens(rendered):
    """Every page of the table of contents was built and opened in the browser with a heading."""
    for name in _toc_files():
        page = f"{name}.html"
        assert page in PAGES, f"{name} is in _toc.yml but {page} was not built"
        assert page in rendered and rendered[page]["h1"], f"{page} did not open with a heading"
    opened = set(rendered)
    assert opened == {p for p in PAGES if not _redirect_of(p)}, "the browser did not open every page"


def test_no_launch_button_to_a_service_that_cannot_run_the_chapters(rendered):
    """Launch buttons are off (_config.yml): Colab cannot run MyST .md sources, and Binder's build
    cannot be checked offline. No page links to either."""
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    for key in ("colab_url", "binderhub_url", "jupyterhub_url"):
        value = re.search(rf"^\s*{key}:\s*(.*)$", config, flags=re.M)
        assert value is None or value.group(1).strip().strip("\"'") == "", f"_config.yml sets {key}"
    for page, facts in rendered.items():
        launch = [h for h in facts["links"] if "colab.research.google.com" in h or "mybinder.org" in h]
        assert not launch, f"{page}: launch links {launch}"


class _Anchors(HTMLParser):
    """The ids (and a name=...) of a static HTML file, for pages the browser did not open."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.ids.add(value)


def _anchors_of(path: Path, rendered: dict[str, dict]) -> set[str]:
    page = str(path.relative_to(HTML))
    if page in rendered:
        return set(rendered[page]["ids"])
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser.ids


@pytest.mark.parametrize("page", PAGES)
def test_internal_links_resolve(rendered, page):
    """Every link inside the book points to an existing file, and to an existing anchor in it."""
    if page not in rendered:
        pytest.skip(f"{page} is a redirect to {_redirect_of(page)}")
    problems = []
    for href in sorted(set(rendered[page]["links"])):
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
            continue  # external: not checked (no network)
        target = (HTML / page).parent / unquote(parts.path) if parts.path else HTML / page
        target = target.resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(HTML.resolve()) or not target.exists():
            problems.append(f"{href}: no such file")
            continue
        if parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _anchors_of(target, rendered):
            problems.append(f"{href}: no anchor #{parts.fragment} in {target.name}")
    assert not problems, f"{page}: broken internal links:\n" + "\n".join(problems)


# Worked examples of the chapters that must be visible on the page (issue: "each worked example
# listed above is visible in the built HTML").
WORKED_EXAMPLES = {
    "book/01_tokens.html": ["4299", "751", "2599", "1441", "1343", "50257", "768", "1024", "38,597,376"],
    "book/02_attention.html": ["768.0", "most attended token", "pre-LN", "post-LN", "statistics detached"],
    "book/03_masking.html": ["Narwhals", "PAD", "axolotls", "attention_mask", "causal mask only"],
    "book/04_teacher_forcing.html": ["Paris", "capital", "France", "<end>", "(none: ignored)", "0.4928",
                                    "unigram"],
}


@pytest.mark.parametrize("page", sorted(WORKED_EXAMPLES))
def test_worked_examples_visible(rendered, page):
    if page not in rendered:
        pytest.fail(f"{page} is not in the built book")
    missing = [text for text in WORKED_EXAMPLES[page] if text not in rendered[page]["text"]]
    assert not missing, f"{page}: worked example text not visible: {missing}"
