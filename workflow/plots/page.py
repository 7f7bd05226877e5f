"""The DVC plots page, offline: `make plots` (README, "Everyday use").

`build NPM_DIR OUT`: the page template (page.html) with the Vega, Vega-Lite and Vega-Embed builds of
the npm packages unpacked in NPM_DIR (the versions dvc-render's own page loads from its CDN) inlined.
`show TEMPLATE OUT`: which files the declared plots (dvc.yaml) read are missing here and why, then
`dvc plots show` with that template into OUT/index.html.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
MARK = "<!-- VEGA_SCRIPTS -->"
LIBRARIES = ("vega", "vega-lite", "vega-embed")     # the order they must load in


def build(npm_dir: Path, out: Path) -> None:
    scripts = []
    for name in LIBRARIES:
        found = sorted(npm_dir.glob(f"{name}-[0-9]*/package/build/{name}.min.js"))
        if len(found) != 1:
            sys.exit(f"{npm_dir}: expected one unpacked {name} package with build/{name}.min.js; found {len(found)}")
        code = found[0].read_text(encoding="utf-8")
        if "</script" in code:
            sys.exit(f"{found[0]}: contains '</script', cannot be inlined")
        scripts.append(f'<script type="text/javascript">/* {found[0].parents[1].name} */\n{code}\n</script>')
    template = (HERE / "page.html").read_text(encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(template.replace(MARK, "\n".join(scripts)), encoding="utf-8")
    tmp.replace(out)


def declared_files(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, list[str]]:
    """Plot title -> the files its data come from, as dvc.yaml declares them."""
    plots = yaml.safe_load(dvc_yaml.read_text()).get("plots") or []
    return {title: list(spec["y"]) for entry in plots for title, spec in entry.items()}


def show(template: Path, out: Path) -> int:
    if not template.is_file():
        sys.exit(f"{template}: missing; run `make plots` (it builds the offline page template with npm)")
    missing = {t: [f for f in files if not Path(f).is_file()] for t, files in declared_files().items()}
    missing = {t: fs for t, fs in missing.items() if fs}
    if missing:
        print(f"{len(missing)} of the declared plots have no data on this machine (left off the page): their runs "
              "were not made here, or their outputs are in the DVC cache (`dvc pull`), or the run is still to "
              "make (`dvc repro` or `snakemake`):")
        for title, files in missing.items():
            print(f"  {title}: {', '.join(files)}")
    done = subprocess.run(["dvc", "plots", "show", "--html-template", str(template), "-o", str(out)])
    if done.returncode == 0:
        print(f"{out / 'index.html'}: opens offline")
    return done.returncode


if __name__ == "__main__":
    verb, *args = sys.argv[1:] or ["help"]
    if verb == "build" and len(args) == 2:
        build(Path(args[0]), Path(args[1]))
    elif verb == "show" and len(args) == 2:
        sys.exit(show(Path(args[0]), Path(args[1])))
    else:
        sys.exit(__doc__)
