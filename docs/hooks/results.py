"""MkDocs hook: the committed experiment results' figures become pages' images.

The figures of the long runs live once, next to their tables and settings, under
``experiments/results/<name>/``. This hook adds every PNG there to the site as
``results/<name>/<file>.png``, so that a page under ``docs/`` shows it with
``![...](results/<name>/<file>.png)`` and the strict build checks the link.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

_RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results"


def on_files(files: Files, config) -> Files:
    for png in sorted(_RESULTS.glob("*/*.png")):
        uri = f"results/{png.parent.name}/{png.name}"
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files
