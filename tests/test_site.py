"""The documentation site (mkdocs.yml): it builds with no warning, works offline, documents
every public name, and renders in a real browser.

The site is built once per test session (module-scoped fixture) with
``mkdocs build --strict`` into a temporary folder. The browser test needs Debian's chromium
(``apt-get install chromium``); without it the test skips, unless ``INNA_JAX_REQUIRE_BROWSER=1``
(as in .ci/run), where it fails.
"""

from __future__ import annotations

import ast
import functools
import html.parser
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# (module, its __init__.py): the public API is the __all__ of each
PUBLIC_MODULES = {
    "inna_jax": ROOT / "inna_jax" / "__init__.py",
    "inna_jax.dynamics": ROOT / "inna_jax" / "dynamics" / "__init__.py",
    "inna_jax.train": ROOT / "inna_jax" / "train" / "__init__.py",
    "inna_jax.data": ROOT / "inna_jax" / "data" / "__init__.py",
    "inna_jax.models": ROOT / "inna_jax" / "models" / "__init__.py",
    "inna_jax.rl": ROOT / "inna_jax" / "rl" / "__init__.py",
}
SUBPACKAGES = {name for name in PUBLIC_MODULES if name != "inna_jax"}

# a URL that leaves the machine: http(s)://host or protocol-relative //host
REMOTE = re.compile(r"^\s*(?:https?:)?//", re.I)
# XML namespaces are names, not downloads
NAMESPACE = re.compile(r"https?://www\.w3\.org/[\w./-]*")

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # nothing but the local server resolves: a page that needs the network shows it
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--window-size=1280,1600",
    "--virtual-time-budget=10000",
]


def _public_names(init: Path) -> list[str]:
    """The ``__all__`` of a package's ``__init__.py``, read without importing it."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{init} has no __all__")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_jupyter"):
        pytest.importorskip(module, reason='the docs extra is missing (pip install ".[docs]")')
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean"]
        + ["--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=tmp_path_factory.mktemp("cwd"),  # the build must not depend on the working dir
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = result.stdout + result.stderr
    if result.returncode != 0:
        warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
        pytest.fail(
            "mkdocs build --strict failed:\n" + "\n".join(warnings or log.splitlines()[-30:]),
            pytrace=False,
        )
    return out


def _html_files(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_every_page_is_built(site):
    pages = [p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts]
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks  # mkdocs.yml's nav lists them; one left out fails the strict build
    expected = []
    for page in pages:
        stem = page.relative_to(DOCS).with_suffix("")
        expected.append(stem.parent if stem.name == "index" else stem)
    expected += [Path("notebooks") / nb.stem for nb in notebooks]
    for page in expected:
        assert (site / page / "index.html").is_file(), f"{page} was not built"


class _Resources(html.parser.HTMLParser):
    """Everything an HTML page loads by itself (not the links a reader may follow)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.loads: list[tuple[str, str]] = []  # (tag, url)
        self.inline: list[str] = []  # inline <script> and <style> text
        self._inline_tag: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "link" and a.get("href"):
            self.loads.append((f"link rel={a.get('rel')}", a["href"]))
        if tag in {
            "script",
            "img",
            "iframe",
            "source",
            "video",
            "audio",
            "embed",
            "object",
            "input",
            "track",
            "frame",
        }:
            for key in ("src", "poster", "data"):
                if a.get(key):
                    self.loads.append((tag, a[key].strip()))
            for candidate in a.get("srcset", "").split(","):  # "url 2x, url 3x"
                if candidate.strip():
                    self.loads.append((tag, candidate.split()[0]))
        if tag in {"image", "use", "feimage"}:
            for key in ("href", "xlink:href"):
                if a.get(key):
                    self.loads.append((tag, a[key]))
        if "style" in a and "url(" in a["style"]:
            self.inline.append(a["style"])
        if tag in {"script", "style"} and not a.get("src"):
            self._inline_tag = tag

    def handle_endtag(self, tag):
        if tag == self._inline_tag:
            self._inline_tag = None

    def handle_data(self, data):
        if self._inline_tag:
            self.inline.append(data)


def test_site_is_offline(site):
    problems = []
    for page in _html_files(site):
        parser = _Resources()
        parser.feed(page.read_text(encoding="utf-8"))
        name = page.relative_to(site)
        for tag, url in parser.loads:
            if REMOTE.match(url):
                problems.append(f"{name}: <{tag}> loads {url}")
            elif not url.startswith(("data:", "#", "mailto:")):
                path = url.split("#")[0].split("?")[0]
                local = site / path.lstrip("/") if path.startswith("/") else page.parent / path
                if tag in {"script", "img"} or "stylesheet" in tag:
                    if not local.is_file():
                        problems.append(f"{name}: <{tag}> {url} does not exist in the site")
        for text in parser.inline:
            text = NAMESPACE.sub("", text)
            for url in re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"'`)]*", text):
                problems.append(f"{name}: inline script or style refers to {url}")
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8")
        for url in re.findall(r"url\(\s*['\"]?((?:https?:)?//[^'\")]+)", text):
            problems.append(f"{css.relative_to(site)}: url({url})")
        for url in re.findall(r"@import\s+(?:url\()?\s*['\"]?((?:https?:)?//[^'\");]+)", text):
            problems.append(f"{css.relative_to(site)}: @import {url}")
    assert not problems, "\n".join(problems)


def test_material_uses_no_web_fonts(site):
    text = (site / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis" not in text and "fonts.gstatic" not in text
    fonts = sorted(p.name for p in (site / "javascripts" / "katex" / "fonts").iterdir())
    assert "KaTeX_Main-Regular.woff2" in fonts


def test_every_public_name_is_in_the_api_reference(site):
    pages = {p.name: p.read_text(encoding="utf-8") for p in (DOCS / "api").glob("*.md")}
    directives = {
        m.group(1) for text in pages.values() for m in re.finditer(r"^::: ([\w.]+)\s*$", text, re.M)
    }
    built = "".join(p.read_text(encoding="utf-8") for p in (site / "api").rglob("*.html"))
    missing, unrendered = [], []
    for module, init in PUBLIC_MODULES.items():
        for name in _public_names(init):
            path = f"{module}.{name}"
            if path in SUBPACKAGES:  # a subpackage has its own page
                if path not in directives:
                    missing.append(path)
                continue
            if path not in directives:
                missing.append(path)
            elif f'id="{path}"' not in built:
                unrendered.append(path)
    assert not missing, f"public names with no '::: name' in docs/api/*.md: {missing}"
    assert not unrendered, f"public names with no rendered heading in the API pages: {unrendered}"
    # and the reference documents nothing that is not public
    public = {f"{m}.{n}" for m, init in PUBLIC_MODULES.items() for n in _public_names(init)}
    extra = sorted(d for d in directives if d not in public and d not in PUBLIC_MODULES)
    assert not extra, f"docs/api/*.md documents names outside __all__: {extra}"


def test_api_pages_have_no_raw_rest(site):
    """The docstrings' reST (roles, math directives, simple tables) became Markdown."""
    leftovers = []
    for page in (site / "api").rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        for pattern in (
            r":(?:math|func|class|meth|attr|data|mod|obj|exc):`",
            r"\.\. \w+::",
            r"={6,} +={3,}",
        ):
            for m in re.finditer(pattern, text):
                leftovers.append(f"{page.relative_to(site)}: ...{text[m.start() : m.start() + 60]}")
    assert not leftovers, "\n".join(leftovers[:20])
    text = (site / "api" / "optimizers" / "index.html").read_text(encoding="utf-8")
    assert text.count('class="arithmatex"') > 20  # math from the docstrings
    assert 'href="#inna_jax.scale_by_inna"' in text  # a resolved :func: cross-reference


def test_notebooks_are_rendered_with_their_outputs(site):
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
        images = sum("image/png" in o.get("data", {}) for o in outputs)
        texts = [
            "".join(o["text"]).strip()
            for o in outputs
            if o.get("output_type") == "stream" and "".join(o["text"]).strip()
        ]
        page = (site / "notebooks" / nb.stem / "index.html").read_text(encoding="utf-8")
        assert outputs, f"{nb.name} is committed without outputs"
        assert page.count("data:image/png;base64,") >= images, nb.name
        first_line = texts[0].splitlines()[0] if texts else None
        if first_line:
            assert html.escape(first_line, quote=False) in page or first_line in page, nb.name
    # one copy of the notebooks: docs/notebooks is a link to notebooks/
    assert (DOCS / "notebooks").is_symlink()
    assert (DOCS / "notebooks").resolve() == (ROOT / "notebooks").resolve()


def test_changelog_page_is_the_changelog(site):
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    page = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[?([^\]\n]+)", changelog, re.M)
    assert headings
    for heading in headings:
        assert heading.strip() in page, heading


def test_search_index(site):
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    locations = {doc["location"] for doc in index["docs"]}
    assert "api/optimizers/#inna_jax.inna" in locations
    assert any(loc.startswith("notebooks/quickstart/") for loc in locations)
    assert any(loc.startswith("changelog/") for loc in locations)


# ---------------------------------------------------------------- a real browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture(scope="module")
def browser(site):
    exe = _chromium()
    if exe is None:
        if os.environ.get("INNA_JAX_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "chromium not installed (apt-get install chromium), and INNA_JAX_REQUIRE_BROWSER=1"
            )
        pytest.skip("chromium not installed (apt-get install chromium)")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    shots = Path(tempfile.mkdtemp(prefix="inna_jax_site_"))

    def open_page(path: str) -> tuple[str, Path, list[str]]:
        """The page's DOM after its scripts ran, a screenshot, and what the page requested."""
        name = path.strip("/").replace("/", "_") or "home"
        png, netlog = shots / f"{name}.png", shots / f"{name}.netlog.json"
        with tempfile.TemporaryDirectory() as profile:
            result = subprocess.run(
                [
                    exe,
                    *BROWSER_FLAGS,
                    f"--user-data-dir={profile}",
                    f"--screenshot={png}",
                    f"--log-net-log={netlog}",
                    "--dump-dom",
                    f"{origin}/{path}",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout, png, _page_requests(netlog, origin)

    yield open_page
    server.shutdown()
    server.server_close()
    if dest := os.environ.get("INNA_JAX_SITE_SCREENSHOTS"):  # to look at them
        Path(dest).mkdir(parents=True, exist_ok=True)
        for png in shots.glob("[!_]*.png"):
            shutil.copy(png, dest)
    shutil.rmtree(shots, ignore_errors=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def _page_requests(netlog: Path, origin: str) -> list[str]:
    """URLs the page asked for (the browser's own update and sync requests left out)."""
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start and e.get("params", {}).get("initiator") == origin
    ]


def _visible_text(dom: str) -> str:
    article = re.search(r'<article class="md-content__inner[^>]*>(.*?)</article>', dom, re.S)
    assert article is not None, "no article in the page"
    article = article.group(1)
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", article, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def _assert_not_blank(png: Path) -> None:
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1280, 1600)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50, f"{png.name} looks blank"


@pytest.mark.parametrize(
    ("path", "must_show"),
    [
        ("", "inna_jax"),
        ("guides/egn/", "EGN"),
        ("api/optimizers/", "inna_jax.inna"),
        ("notebooks/hb_nag_ode/", "Heavy ball"),
    ],
)
def test_page_renders_in_a_browser(browser, site, path, must_show):
    dom, png, requested = browser(path)
    text = _visible_text(dom)
    assert len(text) > 300, f"{path or 'home'} renders almost nothing: {text[:200]!r}"
    assert must_show in text
    _assert_not_blank(png)
    external = [url for url in requested if not url.startswith("http://127.0.0.1:")]
    assert not external, f"the page asked the network for {external}"
    assert any(url.endswith("search/search_index.json") for url in requested)
    static = (site / path / "index.html").read_text(encoding="utf-8")
    math = static.count('class="arithmatex"')
    if math or path.startswith("notebooks/"):
        rendered = dom.count('class="katex"')
        assert rendered >= max(math, 1), f"{rendered} formulas rendered by KaTeX of {math}"
        assert "katex-error" not in dom, re.findall(r'katex-error"[^>]*title="([^"]*)', dom)
    if path == "api/optimizers/":
        signature = re.search(r'id="inna_jax.inna".*?<div class="doc-signature.*?</div>', dom, re.S)
        assert signature is not None
        words = " ".join(html.unescape(re.sub(r"<[^>]+>", "", signature.group(0))).split())
        for piece in (
            "learning_rate: ScalarOrSchedule",
            "alpha: ArrayLike = 0.5",
            "-> GradientTransformationExtraArgs",
        ):
            assert piece in words, (piece, words[-400:])


_MATH_CHECK = """<!doctype html><html><head><meta charset="utf-8">
<script src="javascripts/katex/katex.min.js"></script></head><body><pre id="out"></pre>
<script>
const formulas = %s;
const failed = [];
for (const [page, display, tex] of formulas) {
  try { katex.renderToString(tex, {displayMode: display, throwOnError: true, strict: "ignore"}); }
  catch (e) { failed.push(page + ": " + e.message.split("\\n")[0] + " in " + tex.slice(0, 120)); }
}
document.getElementById("out").textContent = JSON.stringify({count: formulas.length, failed});
</script></body></html>"""


def test_every_formula_of_the_site_parses_with_katex(browser, site):
    """All the math of the pages and docstrings, through the vendored KaTeX in the browser."""
    formulas = []
    pattern = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)
    for page in _html_files(site):
        for kind, body in pattern.findall(page.read_text(encoding="utf-8")):
            tex = html.unescape(body).strip()
            tex = re.sub(r"^\\[(\[]|\\[)\]]$", "", tex).strip()
            formulas.append((str(page.relative_to(site).parent), kind == "div", tex))
    assert len(formulas) > 100
    (site / "_mathcheck.html").write_text(
        _MATH_CHECK % json.dumps(formulas).replace("</", "<\\/"), encoding="utf-8"
    )
    dom, _, _ = browser("_mathcheck.html")
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-500:]
    result = json.loads(html.unescape(found.group(1)))
    assert result["count"] == len(formulas)
    assert not result["failed"], "\n".join(result["failed"])


def test_rest_docstrings_become_markdown():
    """docs/hooks/griffe_rst.py on a docstring with each construct it converts."""
    griffe = pytest.importorskip(
        "griffe", reason='the docs extra is missing (pip install ".[docs]")'
    )
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_rst", DOCS / "hooks" / "griffe_rst.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    package = griffe.load(
        "inna_jax", search_paths=[str(ROOT)], extensions=griffe.load_extensions(module.RstRoles)
    )
    text = "\n".join(
        [
            "Step :math:`\\theta_{k+1}\n    = \\theta_k` of :func:`inna`, see",
            ":mod:`~inna_jax.dynamics`",
            "and :func:`optax.adam`.",
            "",
            ".. math::",
            "",
            "    a &= b \\\\",
            "    c &= d",
            "",
            "====  =====",
            "name  value",
            "====  =====",
            "``a``  :math:`x`",
            "====  =====",
            "",
            "Example:",
            "    >>> f(':math:`x`')",
        ]
    )
    extension = module.RstRoles()
    extension._collection = package.modules_collection
    out = extension.convert(text, package["inertial._inna"])  # as in inna_jax.inertial._inna
    assert out.split("\n") == [
        "Step $\\theta_{k+1} = \\theta_k$ of "
        '<autoref identifier="inna_jax.inertial._inna.inna" optional><code>inna</code></autoref>,'
        " see",
        '<autoref identifier="inna_jax.dynamics" optional><code>dynamics</code></autoref>',
        'and <autoref identifier="optax.adam" optional><code>optax.adam</code></autoref>.',
        "",
        "",
        "$$",
        "\\begin{aligned}",
        "a &= b \\\\",
        "c &= d",
        "\\end{aligned}",
        "$$",
        "",
        "",
        "",
        "| name | value |",
        "|---|---|",
        "| ``a`` | $x$ |",
        "",
        "",
        "Examples:",
        "    >>> f(':math:`x`')",
    ]
