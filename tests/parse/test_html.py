"""sanitise() and html_to_text() on the HTML mail programs and attackers send."""
from __future__ import annotations

from helpdesk.mail.html import html_to_text, sanitise


def test_scripts_styles_frames_and_forms_are_removed() -> None:
    dirty = (
        "<html><head><title>t</title><style>p{color:red}</style><script>alert(1)</script></head><body>"
        "<p style='color:red' onclick='steal()' class='x'>Hello <b>world</b></p>"
        "<iframe src='https://evil.example'>frame text</iframe>"
        "<form action='https://evil.example'><input name=password><button>Go</button></form>"
        "<svg><script>alert(2)</script></svg><object data='x.swf'></object>"
        "</body></html>"
    )
    clean = sanitise(dirty)
    assert clean == "<p>Hello <b>world</b></p>Go"
    for bad in ("script", "style", "iframe", "form", "input", "onclick", "svg", "object", "alert", "frame text"):
        assert bad not in clean


def test_links_get_safe_rel_and_bad_schemes_lose_href() -> None:
    clean = sanitise(
        '<a href="https://example.com/x?a=1&amp;b=2" rel="opener" target="_blank">ok</a>'
        '<a href="mailto:help@example.com">mail</a>'
        '<a href="javascript:alert(1)">js</a>'
        '<a href="data:text/html;base64,PHNjcmlwdD4=">data</a>'
        '<a href="vbscript:x">vb</a>'
    )
    assert ('<a href="https://example.com/x?a=1&amp;b=2" rel="noopener noreferrer nofollow">ok</a>' in clean)
    assert '<a href="mailto:help@example.com" rel="noopener noreferrer nofollow">mail</a>' in clean
    assert "javascript" not in clean and "data:" not in clean and "vbscript" not in clean
    assert "target" not in clean


def test_formatting_tags_survive() -> None:
    html = (
        "<h1>T</h1><h6>t</h6><div><span>s</span></div><p>a<br>b</p><strong>s</strong><em>e</em><i>i</i><u>u</u>"
        "<ul><li>1</li></ul><ol><li>2</li></ol><blockquote>q</blockquote><pre><code>c</code></pre><hr>"
        "<table><thead><tr><th>h</th></tr></thead><tbody><tr><td colspan=\"2\">d</td></tr></tbody></table>"
    )
    assert sanitise(html) == html


def test_cid_images_point_at_stored_attachments() -> None:
    html = ('<img src="cid:logo@example.com" alt="logo" width="10" height="5" onerror="x()">'
            '<img src="CID:%3Cchart@example.com%3E">'
            '<img src="cid:unknown@example.com" alt="lost">')
    clean = sanitise(html, {"<logo@example.com>": "/attachments/7?inline=1&sig=a",
                            "chart@example.com": "/attachments/8"})
    assert clean == ('<img src="/attachments/7?inline=1&amp;sig=a" alt="logo" width="10" height="5">'
                     '<img src="/attachments/8">'
                     '<img alt="lost">')


def test_cid_without_mapping_is_dropped() -> None:
    assert sanitise('<img src="cid:a@b">') == "<img>"
    assert sanitise('<a href="cid:a@b">x</a>') == '<a rel="noopener noreferrer nofollow">x</a>'


def test_remote_and_inline_data_images() -> None:
    assert sanitise('<img src="https://example.com/a.png">') == '<img src="https://example.com/a.png">'
    assert sanitise('<img src="data:image/png;base64,iVBORw0KGgo=">') == '<img src="data:image/png;base64,iVBORw0KGgo=">'
    assert sanitise('<img src="data:image/svg+xml;base64,PHN2Zz4=">') == "<img>"
    assert sanitise('<img src="file:///etc/passwd">') == "<img>"


def test_empty_and_broken_html() -> None:
    assert sanitise("") == ""
    assert sanitise("<p>unclosed <b>bold") == "<p>unclosed <b>bold</b></p>"
    assert sanitise("<<<>>>&&&") == "&lt;&lt;&lt;&gt;&gt;&gt;&amp;&amp;&amp;"


# ---------------------------------------------------------------------------
# html_to_text


def test_blocks_breaks_and_lists() -> None:
    html = ("<html><head><title>Title</title><style>p {}</style></head><body>"
            "<h1>Order&nbsp;#42</h1><p>Hello&amp;welcome,<br>second line</p>"
            "<div>A div</div><ul><li>one</li><li>two</li></ul>"
            "<ol start=3><li>three</li><li>four</li></ol>"
            "<script>var x = '<p>no</p>';</script><p>caf&eacute; &#8364;5 &lt;ok&gt;</p></body></html>")
    assert html_to_text(html) == (
        "Order #42\n\nHello&welcome,\nsecond line\n\nA div\n\n- one\n- two\n\n3. three\n4. four\n\ncafé €5 <ok>")


def test_whitespace_collapses_but_pre_is_kept() -> None:
    html = "<p>many     spaces\n\n\n and lines</p><p></p><p></p><pre>  keep\n    this</pre>"
    assert html_to_text(html) == "many spaces and lines\n\n  keep\n    this"


def test_links_keep_their_target() -> None:
    assert html_to_text('<a href="https://example.com/t/1">the ticket</a>') == "the ticket (https://example.com/t/1)"
    assert html_to_text('<a href="https://example.com">https://example.com</a>') == "https://example.com"
    assert html_to_text('<a href="mailto:a@example.com">write</a>') == "write"


def test_images_show_their_alt_text_and_tables_their_cells() -> None:
    html = '<img src="x.png" alt="Logo"><table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>'
    assert html_to_text(html) == "[Logo]\n\n\ta\tb\n\tc"


def test_garbage_does_not_raise() -> None:
    assert html_to_text("") == ""
    assert html_to_text("<<<>>> </ < / > <!-- unclosed comment").startswith("<<<>>>")
    assert html_to_text("<p>a</p></div></div><li>b") == "a\n\n- b"
    assert html_to_text("plain text, no tags") == "plain text, no tags"
