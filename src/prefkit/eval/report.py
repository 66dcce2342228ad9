"""A run's report as markdown and as one self-contained HTML page (inline CSS, PNGs embedded as base64 data
URIs, so the page can be mailed or archived alone). General enough for any report: `prefkit train` and
`prefkit selfplay` (prefkit.eval.curves), `prefkit eval` and the demo all render through it. Markdown is rendered
by markdown-it-py.

A section is (heading, body, images). The body is a markdown string (CommonMark and `|` tables), a table given
as a list of dict rows, or a list of such blocks.
Images are PNG paths: linked (relative to the report) in the markdown, embedded in the HTML.
"""

from __future__ import annotations

import base64
import functools
import html
import os
from pathlib import Path
from typing import Sequence

from prefkit.errors import PrefkitError
from prefkit.io import write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#1d1d1f;line-height:1.5}
h1{border-bottom:2px solid #ddd;padding-bottom:.3rem}h2{margin-top:2.2rem;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:1rem 0;font-size:.92rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;
text-align:left}th{background:#f4f4f6}tr:nth-child(even) td{background:#fafafa}
code{background:#f2f2f4;padding:0 .25rem;border-radius:3px}pre{background:#f2f2f4;padding:.7rem;overflow:auto}
pre code{padding:0}figure{margin:1rem 0}img{max-width:100%;border:1px solid #eee}
figcaption{color:#666;font-size:.85rem}
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: Sequence[dict]) -> str:
    """A markdown table from dict rows; columns are the keys in first-seen order, floats to 4 significant digits."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _blocks(body) -> list[str]:
    """The body as a list of markdown strings."""
    if body is None:
        return []
    if isinstance(body, str):
        return [body]
    body = list(body)
    if body and all(isinstance(item, dict) for item in body):
        return [table(body)]
    out = []
    for item in body:
        out += _blocks(item)
    return out


@functools.lru_cache(maxsize=1)
def _markdown():
    """markdown-it-py's CommonMark renderer with tables; raw HTML in the text is escaped, never passed through."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown_to_html(text: str) -> str:
    """CommonMark (paragraphs, lists, fenced code, inline code, bold) and tables, rendered by markdown-it-py."""
    return _markdown().render(text).strip()


def _png(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PrefkitError(f"report image {path}: {error.strerror or error}") from None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise PrefkitError(f"report image {path} is not a PNG file")
    return data


def render_report(title: str, sections: Sequence[tuple], out_dir, *, name: str = "report") -> tuple[Path, Path]:
    """Write out_dir/{name}.md and out_dir/{name}.html (atomically) and return their paths.

    sections: (heading, body, images) triples (images may be omitted); see the module docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = [f"# {title}", ""], [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        if not 2 <= len(section) <= 3:
            raise PrefkitError(f"a report section is (heading, body, images); got {len(section)} items")
        heading, body, *rest = section
        images = rest[0] if rest else ()
        md += [f"## {heading}", ""]
        page.append(f"<h2>{html.escape(str(heading))}</h2>")
        for block in _blocks(body):
            md += [block, ""]
            page.append(markdown_to_html(block))
        for image in images or ():
            image = Path(image)
            data = base64.b64encode(_png(image)).decode("ascii")
            md += [f"![{image.stem}]({Path(os.path.relpath(image.resolve(), out_dir.resolve())).as_posix()})", ""]
            page.append(f'<figure><img alt="{html.escape(image.stem)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(image.name)}</figcaption></figure>")
    document = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
                + "\n".join(page) + "\n</body></html>\n")
    md_path = write_text(out_dir / f"{name}.md", "\n".join(md))
    html_path = write_text(out_dir / f"{name}.html", document)
    return md_path, html_path
