"""MkDocs hook: keeps the notebook pages offline.

nbconvert's page template (used by mkdocs-jupyter) loads MathJax and, for Mermaid diagrams,
mermaid.js from a CDN. The site renders notebook math with its vendored KaTeX
(docs/javascripts/katex-render.js) and the notebooks have no Mermaid diagram, so these
scripts are dropped from the notebook pages. tests/test_site.py checks that no page loads
anything from the network.
"""

from __future__ import annotations

import re

_DROP = (
    re.compile(r'<script src="[^"]*">\s*</script>\s*<!-- MathJax configuration -->', re.S),
    re.compile(r'<script type="text/x-mathjax-config">.*?</script>', re.S),
    re.compile(r'<script type="module">(?:(?!</script>).)*?mermaid.*?</script>', re.S),
    re.compile(r"<!-- (?:Load mathjax|MathJax configuration|End of mathjax configuration) -->"),
)


def on_post_page(output: str, page, config) -> str:
    if not page.file.src_uri.endswith(".ipynb"):
        return output
    for pattern in _DROP:
        output = pattern.sub("", output)
    return output
