"""The Content-Security-Policy of the GraphiQL page, derived from the page itself."""

from __future__ import annotations

import hashlib
from base64 import b64encode
from html.parser import HTMLParser


class _PageAssets(HTMLParser):
    """External scripts and style sheets of a page, and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.script_urls: list[str] = []
        self.style_urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._inline: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            if attributes.get("src"):
                self.script_urls.append(str(attributes["src"]))
            else:
                self._inline = []
        elif tag == "link" and (attributes.get("rel") or "").lower() == "stylesheet":
            self.style_urls.append(str(attributes["href"]))

    def handle_data(self, data: str) -> None:
        if self._inline is not None:
            self._inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._inline is not None:
            self.inline_scripts.append("".join(self._inline))
            self._inline = None


def _sha256_source(text: str) -> str:
    return "'sha256-" + b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def ide_csp(html: str) -> str:
    """The Content-Security-Policy of the GraphiQL page, derived from the page itself:
    its external scripts and style sheets by URL, its inline scripts by SHA-256 hash;
    ``'unsafe-inline'`` styles (GraphiQL inserts ``<style>`` elements at run time);
    fonts and images from ``data:``; no ``'unsafe-eval'``, no framing. See README,
    "What every response carries"."""
    assets = _PageAssets()
    assets.feed(html)
    assets.close()
    scripts = " ".join([*assets.script_urls, *map(_sha256_source, assets.inline_scripts)])
    styles = " ".join([*assets.style_urls, "'unsafe-inline'"])
    return (f"default-src 'none'; script-src {scripts}; style-src {styles}; "
            "img-src data:; font-src data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
