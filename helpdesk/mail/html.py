"""Make inbound HTML safe to show agents, and turn HTML into plain text."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import unquote

import nh3

ALLOWED_TAGS = frozenset({
    "p", "br", "div", "span", "b", "strong", "i", "em", "u", "s", "sub", "sup", "small", "a",
    "ul", "ol", "li", "blockquote", "pre", "code", "table", "thead", "tbody", "tfoot", "tr", "td", "th",
    "caption", "img", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "dl", "dt", "dd",
})
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height", "title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "ol": {"start"},
}
LINK_REL = "noopener noreferrer nofollow"
# "cid" is let through the scheme check only so the attribute filter can swap it
# for the stored attachment's URL; an unresolved cid: is then dropped.
_URL_SCHEMES = {"http", "https", "mailto", "cid", "data"}
_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpe?g|webp|bmp);base64,[a-z0-9+/=\s]*$", re.I)


def sanitise(html: str, cid_urls: dict[str, str] | None = None) -> str:
    """Return HTML reduced to safe formatting, with cid: images pointed at stored attachments."""
    if not html:
        return ""
    urls = {_cid_key(key): value for key, value in (cid_urls or {}).items()}

    def rewrite(tag: str, attribute: str, value: str) -> str | None:
        lowered = value.strip().lower()
        if lowered.startswith("cid:"):
            if tag == "img" and attribute == "src":
                return urls.get(_cid_key(value.strip()[4:]))
            return None
        if lowered.startswith("data:"):
            # Inline data images are harmless pictures; data: anywhere else can carry a page.
            return value if tag == "img" and attribute == "src" and _DATA_IMAGE.match(value.strip()) else None
        return value

    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style", "title", "head", "template", "noscript", "iframe", "object",
                            "textarea", "select", "svg", "math"},
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=rewrite,
        url_schemes=set(_URL_SCHEMES),
        link_rel=LINK_REL,
        strip_comments=True,
    )


def block_remote_images(html: str) -> tuple[str, int]:
    """Return sanitised HTML without its images from other sites, and how many there were.

    A remote image loads when the mail is shown and tells its sender when and from where it was
    read (a tracking pixel). Inline (cid:) images, stored with the mail, and data: images stay.
    The HTML must already be sanitised: this only takes images out.
    """
    if not html:
        return "", 0
    blocked = 0

    def drop_remote(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if tag == "img" and attribute == "src" and not _is_own_url(value):
            blocked += 1
            return None
        return value

    cleaned = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=drop_remote,
        url_schemes=set(_URL_SCHEMES),
        link_rel=LINK_REL,
        strip_comments=True,
    )
    return cleaned, blocked


def _is_own_url(value: str) -> bool:
    """Tell whether an image URL points at this site (a stored inline image) or is a data: image."""
    value = value.strip()
    if value.lower().startswith("data:"):
        return True
    # A path on this site; "//host/x" and "\\host/x" are other sites to a browser.
    return value.startswith("/") and not value.startswith(("//", "/\\"))


def _cid_key(value: str) -> str:
    """Return a Content-ID in the form used as a lookup key: no brackets, URL escapes undone."""
    return unquote(value.strip()).strip().strip("<>").strip().lower()


# ---------------------------------------------------------------------------
# HTML to text

_BLOCK = frozenset({
    "p", "div", "section", "article", "header", "footer", "aside", "nav", "main", "blockquote", "pre",
    "table", "thead", "tbody", "tfoot", "tr", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "form", "fieldset", "address", "figure", "figcaption", "center", "caption",
})
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript", "svg", "math"})
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source",
                   "track", "wbr", "param"})


class _TextExtractor(HTMLParser):
    """Collect the text of an HTML document with line breaks where a browser would put them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.list_stack: list[list[int | None]] = []
        self.pending_href: list[str | None] = []

    def _newline(self, count: int = 1) -> None:
        self.out.append("\n" * count)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            if tag not in _VOID:
                self.skip_depth += 1
            return
        if self.skip_depth:
            return
        if tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self._newline()
            indent = "  " * max(len(self.list_stack) - 1, 0)
            if self.list_stack and self.list_stack[-1][0] is not None:
                number = self.list_stack[-1][0]
                self.list_stack[-1][0] = number + 1
                self.out.append(f"{indent}{number}. ")
            else:
                self.out.append(f"{indent}- ")
        elif tag in ("ul", "ol"):
            start = 1
            for name, value in attrs:
                if name == "start" and value and value.strip().isdigit():
                    start = int(value.strip())
            self.list_stack.append([start if tag == "ol" else None])
            self._newline()
        elif tag in ("td", "th"):
            self.out.append("\t")
        elif tag == "tr":
            self._newline()
        elif tag == "hr":
            self.out.append("\n---\n")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and alt.strip():
                self.out.append(f"[{alt.strip()}]")
        elif tag == "a":
            self.pending_href.append(dict(attrs).get("href"))
            self.out.append("\x00a")  # marks where the link text starts
        elif tag in _BLOCK:
            self._newline(2 if tag in ("p", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "table", "pre")
                          else 1)
        if tag == "pre":
            self.pre_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip_depth = max(self.skip_depth - 1, 0)
            return
        if self.skip_depth:
            return
        if tag in ("ul", "ol"):
            if self.list_stack:
                self.list_stack.pop()
            self._newline()
        elif tag == "a":
            href = self.pending_href.pop() if self.pending_href else None
            self._close_link(href)
        elif tag in ("tr", "li"):
            pass  # the next row or item opens its own line
        elif tag in _BLOCK:
            self._newline(2 if tag in ("p", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "table", "pre")
                          else 1)
        if tag == "pre":
            self.pre_depth = max(self.pre_depth - 1, 0)

    def _close_link(self, href: str | None) -> None:
        # Find the start marker; keep the URL only when it adds something to the text.
        for index in range(len(self.out) - 1, -1, -1):
            if self.out[index] == "\x00a":
                text = "".join(self.out[index + 1:])
                del self.out[index:]
                self.out.append(text)
                shown = " ".join(text.split())
                if (href and href.startswith(("http://", "https://")) and href not in shown
                        and shown not in (href, href.rstrip("/"))):
                    self.out.append(f" ({href})" if shown else href)
                return

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.pre_depth:
            self.out.append(data)
        else:
            self.out.append(re.sub(r"[ \t\r\n\f]+", " ", data))

    def text(self) -> str:
        raw = "".join(part for part in self.out if part != "\x00a")
        lines = [line.replace("\xa0", " ").rstrip() for line in raw.split("\n")]
        lines = [line.lstrip(" ") if not line.startswith("  ") else line for line in lines]
        joined = "\n".join(lines)
        joined = re.sub(r"\n{3,}", "\n\n", joined)
        return joined.strip("\n").strip()


def html_to_text(html: str) -> str:
    """Return the readable text of an HTML document: blocks on their own lines, lists as "- "."""
    if not html:
        return ""
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError, IndexError):
        # html.parser gives up on a few malformed constructs; strip tags crudely then.
        return re.sub(r"\n{3,}", "\n\n", re.sub(r"<[^>]*>", "", html)).strip()
    return parser.text()
