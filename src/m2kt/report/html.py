"""A small HTML vocabulary for the report: every value escaped, every image inlined.

No scripts, no external style sheets or fonts: the page renders the same offline, from a mail
attachment or a CI artifact.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } code { font-size: .9em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: .9em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.ok { color: #17702a; font-weight: 600; } .fail { color: #b00020; font-weight: 600; }
"""


def page(title: str, body: Iterable[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def section(title: str, parts: Iterable[str], level: int = 2) -> str:
    return f"<section><h{level}>{escape(title)}</h{level}>\n" + "\n".join(parts) + "</section>"


def paragraph(text: str, css: str | None = None) -> str:
    css_class = f' class="{css}"' if css else ""
    return f"<p{css_class}>{escape(text)}</p>"


def key_values(rows: Iterable[tuple[str, object]]) -> str:
    """A two-column table of names and values."""
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def figure(png: bytes, caption: str) -> str:
    """An inlined PNG (base64 data URI) with its caption as alt text too."""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )
