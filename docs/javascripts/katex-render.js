// Renders the math of every page with the vendored KaTeX (no network).
// - Markdown pages and docstrings: pymdownx.arithmatex (generic) wraps math in
//   <span class="arithmatex">\(...\)</span> and <div class="arithmatex">\[...\]</div>.
// - Notebooks (mkdocs-jupyter): the Markdown cells keep their $...$ and $$...$$.
// A formula KaTeX cannot parse is shown in red (class katex-error) instead of breaking the page.
(function () {
  var options = { throwOnError: false, strict: "ignore" };

  function render(root) {
    if (typeof renderMathInElement !== "function") return;
    root.querySelectorAll(".arithmatex").forEach(function (element) {
      renderMathInElement(element, Object.assign({
        delimiters: [
          { left: "\\(", right: "\\)", display: false },
          { left: "\\[", right: "\\]", display: true },
        ],
      }, options));
    });
    root.querySelectorAll(".jupyter-wrapper .jp-RenderedMarkdown, .jupyter-wrapper .jp-MarkdownOutput")
      .forEach(function (element) {
        renderMathInElement(element, Object.assign({
          delimiters: [
            { left: "$$", right: "$$", display: true },
            { left: "$", right: "$", display: false },
            { left: "\\(", right: "\\)", display: false },
            { left: "\\[", right: "\\]", display: true },
          ],
          ignoredTags: ["script", "noscript", "style", "textarea", "pre", "code"],
        }, options));
      });
  }

  if (typeof document$ !== "undefined") {
    document$.subscribe(function (doc) { render(doc.body || document.body); });
  } else {
    document.addEventListener("DOMContentLoaded", function () { render(document.body); });
  }
})();
