"""Sphinx glue of the hdlora book (loaded from book/_ext by `local_extensions` in _config.yml).

* The library's docstrings are NumPy-style plain text written for a terminal, not for
  reStructuredText: ``|x|`` is an absolute value there, not a substitution. Before autodoc parses
  a docstring, ``|`` outside inline literals is escaped, so it prints as written.
* NumPy sections written as ``name : what it is`` (a description, not a type, on the name's
  line, as the library writes them): before napoleon reads a docstring, the text after `` : ``
  goes to the description, and a paragraph after a field list at the left margin gets a
  ``Notes`` heading (napoleon would read its lines as more fields).
* MathJax on every page (Sphinx adds it only to pages with equations in their body): the side
  bar lists the pages by title, and some titles hold math (Figure 1's λ).
* Display math: Sphinx wraps an equation that contains ``\\\\`` (a matrix row, say) in
  ``\\begin{split}…\\end{split}``, where MathJax refuses ``\\tag`` ("\\tag not allowed in split
  environment"). The notebooks number their equations with ``\\tag{…}`` as the paper does, so the
  tag is moved after the ``split``: ``\\begin{split}…\\end{split}\\tag{…}`` (valid amsmath).
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx.ext import mathjax
from sphinx.locale import _
from sphinx.util.math import get_node_equation_number

LITERAL = re.compile(r"(``.+?``)")
TAG = re.compile(r"\\tag\*?\{[^{}]*\}")


def escape_bars(line: str) -> str:
    parts = LITERAL.split(line)
    return "".join(p if p.startswith("``") else p.replace("|", r"\|") for p in parts)


def process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    lines[:] = [escape_bars(line) for line in lines]


FIELD = re.compile(r"^(\*{0,2}[A-Za-z_]\w*(?:, \*{0,2}[A-Za-z_]\w*)*) : (.*)$")
FIELD_SECTIONS = {"Parameters", "Other Parameters", "Attributes", "Keyword Arguments"}


def numpy_fields(lines: list[str]) -> list[str]:
    """``name : text`` → ``name`` + ``text`` as the description in the field sections, and a
    ``Notes`` heading before a paragraph that follows a field list at the left margin."""
    out: list[str] = []
    in_fields = False
    i = 0
    while i < len(lines):
        line = lines[i]
        underline = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and underline and set(underline) == {"-"}:
            in_fields = line.strip() in FIELD_SECTIONS
            out += [line, lines[i + 1]]
            i += 2
            continue
        if in_fields and line and not line[0].isspace():
            match = FIELD.match(line)
            if match:
                out += [match.group(1), "    " + match.group(2)]
                i += 1
                continue
            if out and not out[-1].strip():
                out += ["Notes", "-----"]
                in_fields = False
        out.append(line)
        i += 1
    return out


def reshape_fields(app, what, name, obj, options, lines: list[str]) -> None:
    lines[:] = numpy_fields(lines)


def split_with_tag(part: str) -> str:
    """One equation as Sphinx writes it, the ``\\tag`` outside the ``split`` it adds."""
    if r"\\" not in part:
        return part
    tags = TAG.findall(part)
    return r"\begin{split}" + TAG.sub("", part) + r"\end{split}" + "".join(tags)


def visit_displaymath(self, node: nodes.math_block) -> None:
    """sphinx.ext.mathjax.html_visit_displaymath (Sphinx 7), with :func:`split_with_tag`."""
    self.body.append(self.starttag(node, "div", CLASS="math notranslate nohighlight"))
    if node["nowrap"]:
        self.body.append(self.encode(node.astext()))
        self.body.append("</div>")
        raise nodes.SkipNode
    if node["number"]:
        number = get_node_equation_number(self, node)
        self.body.append(f'<span class="eqno">({number})')
        self.add_permalink_ref(node, _("Link to this equation"))
        self.body.append("</span>")
    self.body.append(self.builder.config.mathjax_display[0])
    parts = [prt for prt in node.astext().split("\n\n") if prt.strip()]
    if len(parts) > 1:
        self.body.append(r" \begin{align}\begin{aligned}")
    for i, part in enumerate(parts):
        self.body.append(split_with_tag(self.encode(part)))
        if i < len(parts) - 1:
            self.body.append(r"\\")
    if len(parts) > 1:
        self.body.append(r"\end{aligned}\end{align} ")
    self.body.append(self.builder.config.mathjax_display[1])
    self.body.append("</div>\n")
    raise nodes.SkipNode


def install_math_renderer(app) -> None:
    """Put :func:`visit_displaymath` in front of the renderer in place (MyST's, which handles
    its amsmath blocks itself and gives the others to sphinx.ext.mathjax): after MyST's own
    override, which happens at builder-inited too."""
    renderers = app.registry.html_block_math_renderers
    if "mathjax" not in renderers:
        return
    previous, depart = renderers["mathjax"]

    def visit(self, node):
        if node["nowrap"] or "amsmath" in node.get("classes", []):
            return previous(self, node)
        return visit_displaymath(self, node)

    renderers["mathjax"] = (visit, depart)


def setup(app):
    app.connect("autodoc-process-docstring", reshape_fields, priority=100)  # before napoleon
    app.connect("autodoc-process-docstring", process_docstring)
    app.setup_extension("sphinx.ext.mathjax")
    app.connect("builder-inited", install_math_renderer, priority=900)
    app.set_html_assets_policy("always")
    # set by book/stage.py: a hash of book/'s code, so that a change of it rebuilds every page
    app.add_config_value("hdlora_book_tools", "", "env")
    assert mathjax.html_visit_displaymath  # the function visit_displaymath follows
    return {"parallel_read_safe": True, "parallel_write_safe": True}
