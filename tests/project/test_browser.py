"""The book and a lab as a reader meets them, in real headless Chromium (Debian's /usr/bin/chromium driven by
Playwright; Playwright's own browser download is not used).

1. The built book (`_build/html`, from README command 1 — this test does not build it) served on 127.0.0.1: every
   page of `_toc.yml` loads with every request outside 127.0.0.1 refused, as offline, and asks for nothing outside
   the book; every image has pixels, every local link and asset exists, each chapter notebook shows a figure and
   its maths typeset by the book's own MathJax, and each page whose notebook uses widgets embeds their state and
   draws them (`_static/diffu_widgets.js`).
2. A lab in JupyterLab on 127.0.0.1 (a temporary copy, fresh Jupyter settings and a random token): Run All Cells,
   then the guidance-scale slider renders and moving it changes the plot.

Marked `browser` (deselect with `-m "not browser"`). Without chromium, Playwright or a built book they skip with the
reason; `.ci/run` sets DIFFU_BROWSER_TESTS=require, which turns those skips into failures. Screenshots of a failing
page are saved under the test's tmp_path (printed in the failure)."""

import contextlib
import functools
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

import psutil
import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")
LAB = ROOT / "labs" / "source" / "lab3_guidance" / "lab3_guidance.ipynb"
# Flags that work on the CI machine (root, no GPU, no internet). Playwright adds --headless and a fresh
# temporary --user-data-dir itself (it refuses one in args).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # the 2-core machine is slow, and may be busy with another test
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook shown in JupyterLab
SKIP_SCHEMES = ("http:", "https:", "mailto:", "data:", "javascript:", "//")


def _unavailable(reason):
    """Skip locally; fail in CI (DIFFU_BROWSER_TESTS=require), where a missing browser or book is a defect."""
    if os.environ.get("DIFFU_BROWSER_TESTS") == "require":
        pytest.fail(f"{reason} (DIFFU_BROWSER_TESTS=require)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements.txt)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextlib.contextmanager
def _page(browser, shots, name, outside=None):
    """A fresh page that never reaches outside 127.0.0.1, as offline: every other request is aborted (and its URL
    appended to the list ``outside`` if one is given), with a screenshot saved if the block fails."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)

    def abort(route):
        if outside is not None:
            outside.append(route.request.url)
        route.abort()

    context.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]).*"), abort)
    page = context.new_page()
    try:
        yield page
    except BaseException:
        shots.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            print(f"screenshot of the failing page: {shots / name}.png")
        raise
    finally:
        context.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# 1. The built book
# ---------------------------------------------------------------------------------------------------------------


def _toc_files(node):
    """Every `file:` (and the `root:`) of _toc.yml, in order."""
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                yield node[key]
        for value in node.values():
            if isinstance(value, (dict, list)):
                yield from _toc_files(value)
    elif isinstance(node, list):
        for value in node:
            yield from _toc_files(value)


def _notebook_source(doc, cell_type):
    cells = json.loads((ROOT / f"{doc}.ipynb").read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == cell_type)


@pytest.fixture(scope="module")
def site():
    """_build/html served on 127.0.0.1 at a free port, by the standard library's http.server in a thread."""
    if not (HTML / "index.html").is_file():
        _unavailable(f"{HTML / 'index.html'} not found: build the book first (README command 1)")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _record_http_error(site, errors, response):
    if response.url.startswith(site) and response.status >= 400:
        errors.append(f"HTTP {response.status} for {response.url}")


def _record_failed_request(site, errors, request):
    if request.url.startswith(site):
        errors.append(f"request failed: {request.url} ({request.failure})")


@functools.cache
def _ids(path):
    return set(re.findall(r'\bid="([^"]+)"', Path(path).read_text(errors="replace")))


def _broken_local_refs(page_url, refs):
    """The references (src/href attribute values) of a page that point into the site at a missing file, or at a
    missing anchor of one of its HTML pages."""
    broken = []
    for ref in refs:
        if not ref or ref.startswith(SKIP_SCHEMES) or ref == "#":
            continue
        url = urlsplit(urljoin(page_url, ref))
        target = HTML / unquote(url.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{ref} (no file {target.relative_to(HTML)})")
        elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in _ids(target):
            broken.append(f"{ref} (no id {url.fragment!r} in {target.relative_to(HTML)})")
    return broken


def test_built_book_pages(browser, site, tmp_path):
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    docs = list(dict.fromkeys(_toc_files(toc)))
    assert len(docs) > 20, docs
    notebooks = [d for d in docs if (ROOT / f"{d}.ipynb").is_file()]
    # pages rendered without being executed (the labs' student versions) have no outputs, hence no widget state
    no_exec = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"].get("exclude_patterns", [])
    executed = [d for d in notebooks if not any(PurePosixPath(f"{d}.ipynb").match(p) for p in no_exec)]
    chapters = [d for d in notebooks if d.startswith("book/")]
    with_math = [d for d in chapters if re.search(r"\$|\\begin\{|\{math\}", _notebook_source(d, "markdown"))]
    # the widget classes each notebook constructs (widgets.FloatSlider(...) → FloatSliderModel in the state)
    widget_models = {
        d: {f"{name}Model" for name in re.findall(r"\bwidgets\.([A-Z]\w*)\(", code)}
        for d in executed
        if re.search(r"\bwidgets\.", code := _notebook_source(d, "code"))
    }
    assert len(chapters) >= 10 and len(with_math) >= 10 and widget_models, (chapters, with_math, widget_models)

    problems = {}
    pages = [("", "index.html")] + [(d, f"{d}.html") for d in docs]
    for doc, rel in pages:
        url = f"{site}/{rel}"
        bad = problems.setdefault(rel, [])
        outside = []  # requests for anything not served by the book itself: none may be made
        with _page(browser, tmp_path, rel.replace("/", "_"), outside) as page:
            failed_local = []  # what the page itself fetched from the site (css, js, fonts, images) and did not get
            page.on("response", functools.partial(_record_http_error, site, failed_local))
            page.on("requestfailed", functools.partial(_record_failed_request, site, failed_local))
            response = page.goto(url, wait_until="load")
            if response is None or response.status != 200:
                bad.append(f"HTTP {response and response.status}")
                continue
            page.wait_for_load_state("networkidle")
            bad += failed_local
            bad += [f"request outside the book (offline it fails): {u[:120]}" for u in dict.fromkeys(outside)]
            if doc in with_math:  # offline (no request outside 127.0.0.1 succeeds), the maths is still typeset
                typeset = page.evaluate(
                    r"""async () => {
                        if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return null;
                        await MathJax.startup.promise;
                        const main = document.querySelector('main') || document.body;
                        return {containers: document.querySelectorAll('mjx-container').length,
                                raw: (main.innerText.match(/\\\(|\\\[|\\begin\{/g) || []).slice(0, 3)};
                    }"""
                )
                if typeset is None:
                    bad.append("MathJax did not load: the page needs the network for its maths")
                elif not typeset["containers"] or typeset["raw"]:
                    bad.append(f"maths not typeset offline: {typeset}")
            info = page.evaluate(
                """() => ({
                    refs: [...document.querySelectorAll('[src], [href]')]
                        .map(e => e.getAttribute('src') ?? e.getAttribute('href')),
                    images: [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete &&
                        i.naturalWidth > 0, output: !!i.closest('.cell_output')})),
                    math: [...document.querySelectorAll('.math')].map(e => e.textContent),
                    views: [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')]
                        .map(e => JSON.parse(e.textContent).model_id),
                    state: [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]')]
                        .map(e => e.textContent),
                })"""
            )
            bad += _broken_local_refs(page.url, info["refs"])
            bad += [f"image did not load: {i['src'][:100]}" for i in info["images"] if not i["ok"]]
            if doc in chapters and not any(i["ok"] and i["output"] for i in info["images"]):
                bad.append("no figure (no loaded <img> in a cell output)")
            # MathJax replaces the TeX in the live page, so the TeX source is looked for in the served file
            if doc in with_math and not re.search(
                r'class="math[^"]*">\s*(\\\(|\\\[|\\begin\{)', (HTML / rel).read_text(encoding="utf-8")
            ):
                bad.append(f"the notebook has math, the page has no math source ({len(info['math'])} .math elements)")
            if doc in widget_models:
                if len(info["state"]) != 1:
                    bad.append(f"{len(info['state'])} widget-state scripts, expected 1")
                else:
                    state = json.loads(info["state"][0])["state"]
                    missing = [m for m in info["views"] if m not in state]
                    if not info["views"] or missing:
                        bad.append(f"{len(info['views'])} widget views, state missing for {missing}")
                    if lost := widget_models[doc] - {s["model_name"] for s in state.values()}:
                        bad.append(f"widget state lacks {sorted(lost)}")
                    # _static/diffu_widgets.js draws each view from the state, offline
                    drawn = page.evaluate(
                        """() => [...document.querySelectorAll('.diffu-widget')].map(w => ({
                            id: w.dataset.modelId, missing: w.querySelectorAll('.diffu-w-missing').length,
                            controls: w.querySelectorAll('input, select, .diffu-w-toggles').length}))"""
                    )
                    if sorted(d["id"] for d in drawn) != sorted(info["views"]):
                        bad.append(f"{len(drawn)} widgets drawn for {len(info['views'])} widget views")
                    if any(d["missing"] for d in drawn):
                        bad.append("a widget refers to a model missing from the page's state")
                    if not any(d["controls"] for d in drawn):
                        bad.append("no widget control drawn (sliders, menus, toggles)")
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, json.dumps(problems, indent=1)


# ---------------------------------------------------------------------------------------------------------------
# 2. A lab in JupyterLab
# ---------------------------------------------------------------------------------------------------------------


def _wait_for(url, proc, log, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab (this environment's) on 127.0.0.1 at a free port with a random token, serving a temporary folder
    that holds a copy of the lab, with fresh config, data, runtime and settings dirs; stopped with its kernels."""
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    work, home = tmp_path / "work", tmp_path / "jupyter"
    work.mkdir()
    shutil.copy(LAB, work)
    settings = home / "settings"
    # no news or update pop-ups; every cell in the DOM (JupyterLab 4 otherwise virtualises long notebooks)
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend, as for a student
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        IPYTHONDIR=str(home / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        OMP_NUM_THREADS="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    )
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    cmd = [
        str(Path(sys.executable).parent / "jupyter"),
        "lab",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={work}",
        *(["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/api/status?token={token}", proc, log)
        yield {"base": base, "token": token, "notebook": LAB.name, "log": log}
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def _wait_for_kernel(lab, timeout=120):
    deadline = time.monotonic() + timeout
    kernels = None
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{lab['base']}/api/kernels?token={lab['token']}", timeout=10) as r:
            kernels = json.load(r)
        if any(k["execution_state"] == "idle" and k["connections"] > 0 for k in kernels):
            return
        time.sleep(0.5)
    pytest.fail(f"no idle, connected kernel within {timeout} s: {kernels}")


def test_lab_widget_in_jupyterlab(browser, jupyterlab, tmp_path):
    cells = json.loads(LAB.read_text())["cells"]
    n_code = sum(c["cell_type"] == "code" for c in cells)
    lab = jupyterlab
    with _page(browser, tmp_path, "jupyterlab") as page:
        page.goto(f"{lab['base']}/lab/tree/{lab['notebook']}?token={lab['token']}")
        notebook = page.locator(PANEL)
        # the page's kernel is running and connected (the toolbar's indicator says "idle" before it even starts)
        _wait_for_kernel(lab)
        # JupyterLab renders the cells in batches: wait for all of them (windowingMode "none" keeps them in the DOM)
        page.wait_for_function(
            "([sel, n]) => document.querySelectorAll(sel).length === n", arg=[f"{PANEL} .jp-CodeCell", n_code]
        )

        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        page.wait_for_function(  # started: a prompt shows [*] or a count
            "sel => [...document.querySelectorAll(sel)].some(e => /^\\[(\\*|\\d+)\\]:$/.test(e.textContent.trim()))",
            arg=f"{PANEL} .jp-CodeCell .jp-InputPrompt",
        )
        # done when no cell is queued or running; Run All stops at a failing cell and leaves the rest "[ ]:"
        prompts = f"{PANEL} .jp-CodeCell .jp-InputPrompt"
        page.wait_for_function(
            """([sel, n]) => {
                const p = [...document.querySelectorAll(sel)].map(e => e.textContent.trim());
                return p.length === n && !p.includes('[*]:');
            }""",
            arg=[prompts, n_code],
            timeout=240_000,
        )
        counts = [p.strip() for p in page.locator(prompts).all_inner_texts()]
        stderr = notebook.locator('[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
        assert all(re.fullmatch(r"\[\d+\]:", c) for c in counts), (counts, stderr)  # tracebacks are "stderr" here

        interact = notebook.locator(".widget-interact")
        interact.wait_for()
        slider = interact.locator(".widget-slider", has=page.locator(".widget-label", has_text="scale"))
        slider.wait_for()
        readout = slider.locator(".widget-readout")
        assert readout.inner_text().strip() == "1.00"
        image = interact.locator(".widget-output img")
        image.wait_for()
        before = image.get_attribute("src")
        assert before and image.evaluate("i => i.naturalWidth") > 0

        handle = slider.locator(".noUi-handle")
        handle.focus()
        page.keyboard.press("ArrowRight")  # one step of 0.5
        page.wait_for_function(
            "([sel, src]) => [...document.querySelectorAll(sel)].some(i => i.src !== src && i.naturalWidth > 0)",
            arg=[f"{PANEL} .widget-interact .widget-output img", before],
            timeout=TIMEOUT_MS,
        )
        assert readout.inner_text().strip() == "1.50"
        after = interact.locator(".widget-output img").get_attribute("src")
        assert after and after != before
