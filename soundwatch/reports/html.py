"""Assembling one self-contained HTML page: inline CSS, images as base64 PNG data URIs,
no scripts and no external assets, so the file opens offline and can be mailed around.

Every piece of text passes through :func:`escape`; the functions return HTML strings
that the caller joins. Report code builds its page with these functions only, never
with HTML of its own.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence

STYLE = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d1d1f; background: #f6f6f4; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff;
       min-height: 100vh; box-shadow: 0 0 12px rgba(0,0,0,.06); }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 21px; margin: 40px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e3e0; }
h3 { font-size: 17px; margin: 28px 0 8px; }
h4 { font-size: 15px; margin: 0 0 6px; }
p.lead { color: #555; margin-top: 0; }
.note { color: #666; font-size: 13px; }
.warning { background: #fdecea; border-left: 4px solid #c0392b; padding: 6px 10px; }
.oracle td { background: #fbf4e6; font-style: italic; }
.used td:first-child { font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px; }
th, td { border: 1px solid #dcdcd8; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f0f0ec; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 600; background: #fafaf8; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid #ecece8; }
figcaption { font-size: 13px; color: #555; margin-top: 4px; }
nav.toc { background: #fafaf8; border: 1px solid #e3e3e0; padding: 8px 16px; font-size: 14px; }
nav.toc ul { margin: 4px 0; padding-left: 20px; }
nav.toc .sub { font-size: 13px; }
.cards { display: grid; grid-template-columns: 1fr; gap: 14px; }
.cards.two { grid-template-columns: 1fr 1fr; }
.card figure { margin: 6px 0 0; }
.card figure img { border: none; }
.card p { margin: 4px 0; }
.card { border: 1px solid #e3e3e0; border-radius: 6px; padding: 10px 12px; }
.card.anomaly { border-left: 5px solid #d1495b; }
.card.normal { border-left: 5px solid #3b75af; }
.card.unknown { border-left: 5px solid #999; }
.card audio { height: 30px; vertical-align: middle; margin-right: 6px; }
.card p.audio { font-size: 13px; }
details summary { cursor: pointer; color: #3b75af; }
code { background: #f3f3f0; padding: 0 3px; border-radius: 3px; font-size: 13px; }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 12px;
         color: #fff; background: #777; }
.badge.anomaly { background: #d1495b; } .badge.normal { background: #3b75af; }
"""


def escape(text: object) -> str:
    """HTML-escape any value's ``str``."""
    return html.escape(str(text), quote=True)


def slug(text: str) -> str:
    """An id attribute for a heading: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: bytes, alt: str, caption: str = "") -> str:
    """A ``<figure>`` with the PNG embedded and an optional caption."""
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(png)}" alt="{escape(alt)}">{text}</figure>'


def fmt(value: object, digits: int = 4) -> str:
    """Numbers for tables: floats to ``digits`` significant decimals, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.{digits}f}"
        return f"{value:.4g}"  # tiny or huge scores stay readable
    return str(value)


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    row_classes: Sequence[str] | None = None,
    digits: int | Sequence[int] = 4,
) -> str:
    """An HTML table; numbers right-aligned and formatted by :func:`fmt`.

    Parameters
    ----------
    header : sequence of str
        Column titles; empty for a key-value table without a header row.
    rows : sequence of sequences
        Cells; a cell that is a :class:`Raw` is inserted unescaped.
    row_classes : sequence of str, optional
        A CSS class per row (e.g. ``"oracle"``).
    digits : int or sequence of int, default=4
        Decimals of float cells, for all columns or per column.
    """
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    head = f"<thead><tr>{head}</tr></thead>" if head else ""  # key-value tables: none
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            places = digits if isinstance(digits, int) else digits[j]
            if isinstance(cell, Raw):
                cells.append(f"<td>{cell}</td>")
            elif isinstance(cell, int | float) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{escape(fmt(cell, places))}</td>')
            else:
                cells.append(f"<td>{escape(fmt(cell, places))}</td>")
        css = f' class="{escape(row_classes[i])}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


class Raw(str):
    """A string of trusted HTML that :func:`table` inserts without escaping."""


def link(href: str, text: str) -> Raw:
    """``<a href=...>text</a>``, as a :class:`Raw` table cell."""
    return Raw(f'<a href="{escape(href)}">{escape(text)}</a>')


def details(summary: str, inner: str) -> str:
    """A collapsed ``<details>`` block: escaped ``summary``, HTML ``inner`` shown on click."""
    return f"<details><summary>{escape(summary)}</summary>{inner}</details>"


def badge(text: str, css: str) -> str:
    """A small coloured label, e.g. ``badge("anomaly", "anomaly")``."""
    return f'<span class="badge {escape(css)}">{escape(text)}</span>'


def audio_player(url: str, name: str) -> str:
    """A paragraph with an audio player for ``url`` and a link to it named ``name``."""
    url = escape(url)
    return (
        f'<p class="audio"><audio controls preload="none" src="{url}"></audio> '
        f'<a href="{url}">{escape(name)}</a></p>'
    )


def card(css: str, title: str, facts: Sequence[str], *parts: str) -> str:
    """A bordered box: escaped ``title``, HTML ``facts`` joined by dots, then ``parts``."""
    return (
        f'<div class="card {escape(css)}"><h4>{escape(title)}</h4>'
        f"<p>{' · '.join(facts)}</p>{''.join(parts)}</div>"
    )


def cards(items: Sequence[str], columns: int = 1) -> str:
    """:func:`card` boxes in a grid of one or two columns."""
    layout = "cards" if columns == 1 else "cards two"
    return f'<div class="{layout}">{"".join(items)}</div>'


def heading(text: str, level: int = 2, anchor: str | None = None) -> str:
    """``<hN id=...>text</hN>``."""
    return f'<h{level} id="{escape(anchor or slug(text))}">{escape(text)}</h{level}>'


def paragraph(text: str, css: str = "") -> str:
    """A ``<p>`` of escaped text."""
    attr = f' class="{escape(css)}"' if css else ""
    return f"<p{attr}>{escape(text)}</p>"


def toc(entries: Sequence[tuple[str, str, int]]) -> str:
    """A table of contents of (text, anchor, level) entries.

    Level-2 entries are list items; deeper ones follow their level-2 entry on the same
    line, separated by dots, so a bench of many detectors keeps a short contents box.
    """
    items: list[list[str]] = []
    for text, anchor, level in entries:
        link = f'<a href="#{escape(anchor)}">{escape(text)}</a>'
        if level > 2 and items:
            items[-1].append(link)
        else:
            items.append([link])
    lines = []
    for first, *rest in items:
        sub = f': <span class="sub">{" · ".join(rest)}</span>' if rest else ""
        lines.append(f"<li>{first}{sub}</li>")
    return f'<nav class="toc"><strong>Contents</strong><ul>{"".join(lines)}</ul></nav>'


def document(title: str, body: str) -> str:
    """A complete HTML5 page with the inline stylesheet."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
