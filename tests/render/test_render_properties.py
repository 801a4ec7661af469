"""Properties of the renderer and the tokens that must hold for any input."""
from __future__ import annotations

import html
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from helpdesk.mail.render import (
    CATALOGUE,
    SUBJECT_MAX_CHARS,
    find_placeholders,
    render_html,
    render_mail,
    render_subject,
    render_text,
)
from helpdesk.mail.tokens import (
    MAX_TICKET_ID,
    make_message_id,
    normalise_subject,
    reply_token,
    tag_subject,
    ticket_id_from_message_ids,
    ticket_number_from_subject,
    verify_reply_token,
)

NAMES = list(CATALOGUE)
# Template text biased towards the renderer's syntax, so the interesting cases come up often.
template_piece = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["$", "$$", "${", "}", "{", "\n", "\r\n", "\n\n", "<", "&", "http://", "https://x.example/"]),
    st.sampled_from(NAMES + ["nope", "x1"]).map(lambda n: f"${n}"),
    st.sampled_from(NAMES + ["nope"]).map(lambda n: f"${{{n}}}"),
)
templates = st.lists(template_piece, max_size=20).map("".join)
values_maps = st.dictionaries(st.sampled_from(NAMES + ["other"]), st.text(max_size=30), max_size=len(NAMES))
allowed_sets = st.one_of(st.none(), st.lists(st.sampled_from(NAMES)))
keys = st.binary(min_size=1, max_size=64)
ticket_ids = st.integers(min_value=1, max_value=MAX_TICKET_ID)

OUR_TAGS = {"div", "p", "br", "a"}


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@settings(deadline=None)
@given(templates, values_maps, allowed_sets)
def test_any_template_with_any_values_renders(text, values, allowed):
    rendered = render_text(text, values, allowed)
    mail = render_mail(text, text, values, allowed)
    assert mail.text == rendered.text
    assert set(rendered.unknown) <= set(find_placeholders(text))
    known = set(CATALOGUE if allowed is None else allowed)
    assert not set(rendered.unknown) & known


@settings(deadline=None)
@given(st.text(), values_maps)
def test_arbitrary_text_never_raises(text, values):
    render_mail(text, text, values)


@settings(deadline=None)
@given(templates, values_maps)
def test_html_contains_only_our_own_tags(text, values):
    collector = TagCollector()
    collector.feed(render_html(text, values).text)
    collector.close()
    for tag, attrs in collector.tags:
        assert tag in OUR_TAGS
        if tag == "a":
            assert list(attrs) == ["href"]
            assert attrs["href"].lower().startswith(("http://", "https://"))


# Text without line breaks or URLs, so a value's markup lands in the HTML in one piece.
plain = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).filter(
    lambda s: "://" not in s and "\u2028" not in s and "\u2029" not in s)


@settings(deadline=None)
@given(st.sampled_from(NAMES), plain, plain, templates)
def test_markup_in_a_value_arrives_escaped(name, inner, before, text):
    value = f"{before}<script>{inner}</script>"
    rendered = render_html(f"{text} ${{{name}}} {text}", {name: value})
    assert html.escape(value, quote=True) in rendered.text
    assert value not in rendered.text
    assert "<script" not in rendered.text


@settings(deadline=None)
@given(templates, values_maps)
def test_subject_is_one_header_safe_line(text, values):
    subject = render_subject(text, values).text
    assert "\r" not in subject and "\n" not in subject
    assert len(subject) <= SUBJECT_MAX_CHARS
    assert subject == subject.strip()
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in subject)


@settings(deadline=None)
@given(ticket_ids, keys, keys)
def test_tokens_verify_with_their_key_only(ticket_id, key, other_key):
    token = reply_token(ticket_id, key)
    assert verify_reply_token(token, key) == ticket_id
    if other_key != key:
        assert verify_reply_token(token, other_key) is None


@settings(deadline=None)
@given(st.one_of(st.none(), ticket_ids), keys)
def test_message_ids_lead_back_to_their_ticket(ticket_id, key):
    message_id = make_message_id(ticket_id, key, "helpdesk.example.com")
    assert ticket_id_from_message_ids([message_id], key) == ticket_id


@settings(deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), keys)
def test_arbitrary_ids_and_tokens_never_raise(token, header, key):
    assert verify_reply_token(token, key) is None
    ticket_id_from_message_ids([header, token], key)


@settings(deadline=None)
@given(st.text(st.characters(blacklist_characters="[]"), max_size=60), st.integers(min_value=1, max_value=10**12))
def test_tag_round_trips_and_normalises_away(subject, number):
    tagged = tag_subject(subject, number)
    assert ticket_number_from_subject(tagged) == number
    assert tag_subject(tagged, number) == tagged
    assert normalise_subject(tagged) == normalise_subject(subject)
