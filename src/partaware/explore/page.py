"""The explorer page as one self-contained HTML file: `page.html` with `page.css`, `page.js` and
the data (JSON, tokens as base64 float16, pictures as data URIs) inline, so it opens from disk
with no server and no network (browsers refuse `fetch` of file:// URLs, so nothing is loaded
beside it). Written by one rename: a crash leaves no half page.
"""
from __future__ import annotations

import html
import json
from importlib.resources import files
from pathlib import Path

from ..atomic import atomic_path


def _asset(name: str) -> str:
    return (files(__package__) / name).read_text(encoding="utf-8")


def render(payload: dict) -> str:
    """The page's text: the template filled with styles, script and data (`</` escaped so no
    string in the data can end its script element)."""
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    title = html.escape(f"partaware explore: {payload['dataset']}")
    page = _asset("page.html").replace("__TITLE__", title).replace("/*CSS*/", _asset("page.css"))
    page = page.replace("/*JS*/", _asset("page.js"))
    head, tail = page.split("__DATA__")
    return head + data + tail


def write_page(payload: dict, out: str | Path) -> int:
    """Write the page; returns its size in bytes."""
    text = render(payload).encode("utf-8")
    with atomic_path(out) as tmp:
        tmp.write_bytes(text)
    return len(text)
