"""The two result pages, opened as a reader opens them: in a headless Chromium with the network blocked.

The DVC plots page (`make plots`: Vega inlined) must draw every declared plot that has data, with its
marks, and log no error; Snakemake's report must list its result categories and, in one, the run's
figures and a table. A page is checked through a copy with a recorder in its <head> (console errors,
uncaught exceptions, failed loads; Vega-Embed asked for SVG so that the marks are in the DOM), and a
screenshot of each is kept beside the test's files for the failure message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, tiny_params, workflow_project

PLOTS_PAGE = REPO / ".venv" / "share" / "hrm" / "plots-offline.html"    # built by `make plots` / `make test`
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")

RECORDER = """<script>(function () {
  var errors = [], keep = function (m) { errors.push(String(m)); };
  var error = console.error;
  console.error = function () { keep(Array.prototype.join.call(arguments, ' ')); error.apply(console, arguments); };
  window.addEventListener('error', function (e) {
    keep(e.message || ('failed to load ' + ((e.target && (e.target.src || e.target.href)) || '?')));
  }, true);
  window.addEventListener('unhandledrejection', function (e) { keep('unhandled rejection: ' + e.reason); });
  var embed;
  Object.defineProperty(window, 'vegaEmbed', {configurable: true, set: function (v) { embed = v; },
    get: function () { return embed && function (el, spec, opts) {
      return embed(el, spec, Object.assign({}, opts, {renderer: 'svg'}))
        .catch(function (e) { keep('vegaEmbed ' + el + ': ' + e); }); }; }});
  window.addEventListener('load', function () { setTimeout(function () {
    var pre = document.createElement('pre'); pre.id = 'page-errors'; pre.textContent = JSON.stringify(errors);
    document.body.appendChild(pre); }, 6000); });
})();</script>"""

# Snakemake's report is an app: open the first study's category, then the run, as a reader clicks.
OPEN_A_CATEGORY = """<script>window.addEventListener('load', function () {
  var click = function (match) {
    var found = Array.prototype.filter.call(document.querySelectorAll('a, button, li, span, td, div'),
      function (e) { return e.childElementCount === 0 && match.test(e.textContent.trim()); });
    if (found.length) found[0].click();
  };
  setTimeout(function () { click(/^Study I: image classification$/); }, 1500);
  setTimeout(function () { click(/digits-tiny/); }, 3000);
});</script>"""


def browser() -> str:
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    if os.environ.get("CI"):
        pytest.fail("no headless Chromium: `make test` installs it (apt-get install chromium-headless-shell)")
    pytest.skip("no headless Chromium here (apt-get install chromium-headless-shell)")


@dataclass
class Page:
    dom: str
    errors: list[str]
    screenshot: Path

    @property
    def text(self) -> str:
        body = re.sub(r"<(script|style)\b.*?</\1>", " ", self.dom, flags=re.S)
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def open_page(page: Path, work: Path, extra: str = "") -> Page:
    """Load `page` offline (every host unresolvable), let it settle, and read back its DOM and errors."""
    copy = work / f"checked-{page.name}"
    html = page.read_text(encoding="utf-8")
    head = re.search(r"<head[^>]*>", html)
    assert head, f"{page}: no <head>"
    copy.write_text(html[:head.end()] + RECORDER + extra + html[head.end():], encoding="utf-8")
    flags = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--virtual-time-budget=20000", "--window-size=1400,2400"]
    dom = subprocess.run([*flags, "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=120).stdout
    shot = work / f"{page.stem}.png"
    subprocess.run([*flags, f"--screenshot={shot}", copy.as_uri()], capture_output=True, timeout=120)
    found = re.search(r'<pre id="page-errors">(.*?)</pre>', dom, flags=re.S)
    assert found, f"{page}: the page never finished loading (screenshot: {shot})"
    errors = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                        .replace("&gt;", ">"))
    return Page(dom, errors, shot)


def plots_drawn(page: Page, source: Path) -> dict[str, int]:
    """Per plot div of the page: the SVG marks drawn in it (paths and symbols of Vega's mark groups)."""
    ids = re.findall(r'<div id = "([^"]+)">', source.read_text(encoding="utf-8"))
    drawn = {}
    for div in ids:
        start = page.dom.find(f'id="{div}"')
        end = min([page.dom.find(f'id="{other}"', start + 1) for other in ids if other != div
                   and page.dom.find(f'id="{other}"', start + 1) > 0] or [len(page.dom)])
        part = page.dom[start:end] if start >= 0 else ""
        drawn[div] = len(re.findall(r'<path[^>]*\sd="M', part)) if "<svg" in part and "role-mark" in part else 0
    return drawn


def _plots_project(root: Path) -> Path:
    """A tiny run trained and evaluated through the workflow, then the plots page of its dvc.yaml."""
    if not PLOTS_PAGE.is_file():
        message = f"{PLOTS_PAGE}: missing; `make plots` (or `make test`) builds it with npm"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    project = workflow_project(root, tiny_params())
    env = os.environ | {"PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    made = subprocess.run(["snakemake", "-c2", "demo"], cwd=project, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]
    subprocess.run(["python", "-m", "hrm", "dvc-yaml"], cwd=project, env=env, check=True, capture_output=True)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=project, env=env, check=True)
    shown = subprocess.run(["python", str(REPO / "workflow/plots/page.py"), "show", str(PLOTS_PAGE), "plots"],
                           cwd=project, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return project


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    browser()
    root = tmp_path_factory.mktemp("pages")
    project = _plots_project(root / "project")
    env = os.environ | {"PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    subprocess.run(["snakemake", "--report", "report.html", "demo"], cwd=project, env=env, check=True,
                   capture_output=True)
    return project


def test_the_plots_page_draws_every_plot_offline(pages: Path, tmp_path: Path) -> None:
    source = pages / "plots" / "index.html"
    page = open_page(source, tmp_path)
    assert page.errors == [], f"{page.errors} (screenshot: {page.screenshot})"
    drawn = plots_drawn(page, source)
    assert len(drawn) >= 3 and all(marks > 0 for marks in drawn.values()), f"{drawn} (screenshot: {page.screenshot})"


def test_a_page_that_loads_vega_from_the_network_fails_the_check(pages: Path, tmp_path: Path) -> None:
    """The check on DVC's own page (Vega from a CDN): offline it draws nothing, and the check says so."""
    env = os.environ | {"PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    subprocess.run(["dvc", "plots", "show", "-o", str(tmp_path / "cdn")], cwd=pages, env=env, check=True,
                   capture_output=True)
    page = open_page(tmp_path / "cdn" / "index.html", tmp_path)
    assert any("vegaEmbed" in e or "failed to load" in e for e in page.errors), page.errors
    assert not any(plots_drawn(page, tmp_path / "cdn" / "index.html").values())


def test_the_snakemake_report_lists_its_categories_and_shows_a_run(pages: Path, tmp_path: Path) -> None:
    home = open_page(pages / "report.html", tmp_path)
    assert home.errors == [], f"{home.errors} (screenshot: {home.screenshot})"
    assert "Study I: image classification" in home.text and "Tables" in home.text, home.screenshot
    (tmp_path / "category").mkdir()
    run = open_page(pages / "report.html", tmp_path / "category", OPEN_A_CATEGORY)
    assert run.errors == [], f"{run.errors} (screenshot: {run.screenshot})"
    for figure in ("accuracy", "confusion", "errors", "loss"):       # the run's figures, listed in the category
        assert f"digits-tiny seed 0 {figure}" in run.text, (figure, run.screenshot)
    assert "<table" in run.dom and "data:image/png" in run.dom, run.screenshot
