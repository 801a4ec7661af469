"""The `$variable` renderer: syntax, whitelisting, escaping, and the default texts."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from helpdesk.mail.render import (
    CATALOGUE,
    DEFAULT_TEMPLATES,
    GROUPS,
    MACRO_VARIABLES,
    SUBJECT_MAX_CHARS,
    TEMPLATE_KINDS,
    Rendered,
    RenderedMail,
    TemplateKind,
    find_placeholders,
    render_html,
    render_mail,
    render_subject,
    render_text,
    sample_values,
    unknown_placeholders,
)

VALUES = {"ticket_number": "1042", "contact_name": "Jane Doe", "company_name": "Acme Corp"}


class TagCollector(HTMLParser):
    """Collect start tags with attributes and the text, to check what HTML a render produced."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(markup: str) -> TagCollector:
    collector = TagCollector()
    collector.feed(markup)
    collector.close()
    return collector


# --- the catalogue and the kinds -------------------------------------------------


def test_catalogue_names_are_exactly_the_documented_ones():
    assert list(CATALOGUE) == [
        "ticket_number", "ticket_title", "ticket_status", "ticket_priority", "ticket_url",
        "contact_name", "contact_email", "customer_name", "agent_name", "agent_email",
        "reply_body", "sla_target", "sla_due_at", "invite_url", "company_name",
    ]
    for name, description in CATALOGUE.items():
        assert description.strip() and "\n" not in description, name


def test_groups_cover_every_name_exactly_once():
    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(CATALOGUE)
    assert len(grouped) == len(set(grouped))
    assert list(GROUPS) == ["Ticket", "Contact", "Customer", "Agent", "Reply", "SLA", "Invitation", "Company"]


def test_template_kinds_are_the_five_notifications_in_order():
    assert list(TEMPLATE_KINDS) == ["new_ticket", "agent_reply", "resolved", "sla_breach", "agent_invite"]
    assert TEMPLATE_KINDS["new_ticket"] == TemplateKind(
        "new_ticket", "New ticket confirmation", "contact", TEMPLATE_KINDS["new_ticket"].variables)
    assert [(k.label, k.recipient) for k in TEMPLATE_KINDS.values()] == [
        ("New ticket confirmation", "contact"),
        ("Reply notification", "contact"),
        ("Resolution notification", "contact"),
        ("SLA breach alert", "agent"),
        ("Agent invitation", "invitee"),
    ]
    for key, kind in TEMPLATE_KINDS.items():
        assert kind.key == key
        assert set(kind.variables) <= set(CATALOGUE)
        assert "company_name" in kind.variables


def test_each_kind_offers_only_the_names_that_apply_to_it():
    assert "reply_body" in TEMPLATE_KINDS["agent_reply"].variables
    assert "reply_body" not in TEMPLATE_KINDS["new_ticket"].variables
    assert {"sla_target", "sla_due_at"} <= set(TEMPLATE_KINDS["sla_breach"].variables)
    assert "sla_target" not in TEMPLATE_KINDS["resolved"].variables
    assert "invite_url" in TEMPLATE_KINDS["agent_invite"].variables
    assert "ticket_number" not in TEMPLATE_KINDS["agent_invite"].variables
    assert "invite_url" not in TEMPLATE_KINDS["agent_reply"].variables


def test_macros_get_ticket_contact_customer_agent_and_company_only():
    assert set(MACRO_VARIABLES) == (set(GROUPS["Ticket"]) | set(GROUPS["Contact"]) | set(GROUPS["Customer"])
                                    | set(GROUPS["Agent"]) | set(GROUPS["Company"]))
    for name in ("reply_body", "invite_url", "sla_target", "sla_due_at"):
        assert name not in MACRO_VARIABLES


@pytest.mark.parametrize("key", list(TEMPLATE_KINDS))
def test_default_template_uses_only_its_kinds_names(key):
    subject, body = DEFAULT_TEMPLATES[key]
    allowed = TEMPLATE_KINDS[key].variables
    assert unknown_placeholders(subject, allowed) == []
    assert unknown_placeholders(body, allowed) == []
    assert find_placeholders(body), "a default body should address the reader with placeholders"
    assert "[#" not in subject, "composing the mail adds the ticket tag, the template must not"

    mail = render_mail(subject, body, sample_values(), allowed)
    assert mail.unknown == ()
    assert "$" not in mail.subject + mail.text
    assert mail.subject and "\n" not in mail.subject


def test_default_templates_exist_for_every_kind_and_read_as_written():
    assert set(DEFAULT_TEMPLATES) == set(TEMPLATE_KINDS)
    mail = render_mail(*DEFAULT_TEMPLATES["new_ticket"], sample_values(), TEMPLATE_KINDS["new_ticket"].variables)
    assert mail.text.startswith("Hello Jane Doe,\n")
    assert "#1042" in mail.text
    reply = render_mail(*DEFAULT_TEMPLATES["agent_reply"], sample_values(), TEMPLATE_KINDS["agent_reply"].variables)
    assert sample_values()["reply_body"] in reply.text
    invite = render_mail(*DEFAULT_TEMPLATES["agent_invite"], sample_values(),
                         TEMPLATE_KINDS["agent_invite"].variables)
    assert f'<a href="{sample_values()["invite_url"]}">' in invite.html


def test_sample_values_fill_every_catalogue_name():
    values = sample_values()
    assert set(values) == set(CATALOGUE)
    assert values["contact_name"] == "Jane Doe"
    assert values["customer_name"] == "Acme Corp"
    assert values["ticket_number"] == "1042"
    assert all(isinstance(v, str) and v for v in values.values())
    values["contact_name"] = "changed"
    assert sample_values()["contact_name"] == "Jane Doe", "each call returns a fresh dict"


# --- syntax ---------------------------------------------------------------------


def test_both_syntaxes_substitute():
    assert render_text("Hi $contact_name, ticket ${ticket_number}.", VALUES) == Rendered(
        "Hi Jane Doe, ticket 1042.", ())


def test_braces_allow_text_right_after_the_name():
    assert render_text("the ${ticket_number}th ticket", VALUES).text == "the 1042th ticket"


def test_without_braces_the_longest_name_is_taken():
    rendered = render_text("the $ticket_numberth ticket", VALUES)
    assert rendered.text == "the $ticket_numberth ticket"
    assert rendered.unknown == ("ticket_numberth",)


def test_double_dollar_is_a_literal_dollar():
    assert render_text("costs $$5 and $$$ticket_number", VALUES).text == "costs $5 and $1042"
    rendered = render_text("write $$contact_name or $${contact_name}", VALUES)
    assert rendered == Rendered("write $contact_name or ${contact_name}", ())


@pytest.mark.parametrize("text", ["$5", "costs $ 5", "trailing $", "${", "${ticket_number", "${1x}",
                                  "$-", "${ticket number}", "$", "$$$", "{$}", "${}"])
def test_stray_dollars_are_left_as_typed(text):
    rendered = render_text(text, VALUES)
    expected = text.replace("$$", "$")
    assert rendered == Rendered(expected, ())


def test_missing_value_becomes_empty():
    assert render_text("Dear $agent_name.", VALUES) == Rendered("Dear .", ())
    assert render_text("[${agent_name}]", {"agent_name": None}).text == "[]"  # type: ignore[dict-item]


def test_unknown_names_stay_visible_and_are_reported_once_in_order():
    rendered = render_text("$nope ${ticket.id} ${other} $contact_name $nope ${nope}", VALUES)
    assert rendered.text == "$nope ${ticket.id} ${other} Jane Doe $nope ${nope}"
    assert rendered.unknown == ("nope", "other")


def test_names_are_case_sensitive():
    rendered = render_text("$Contact_Name", VALUES)
    assert rendered == Rendered("$Contact_Name", ("Contact_Name",))


def test_allowed_restricts_known_names_even_when_a_value_exists():
    values = dict(VALUES, reply_body="secret draft")
    rendered = render_text("$contact_name: $reply_body", values, MACRO_VARIABLES)
    assert rendered == Rendered("Jane Doe: $reply_body", ("reply_body",))


def test_values_outside_the_catalogue_are_never_substituted():
    rendered = render_text("$password", {"password": "hunter2"})
    assert rendered == Rendered("$password", ("password",))


def test_values_are_not_rendered_again():
    values = {"contact_name": "$company_name ${ticket_number} $$", "company_name": "Acme"}
    assert render_text("$contact_name", values).text == "$company_name ${ticket_number} $$"


def test_no_attribute_access_or_expressions():
    rendered = render_text("${contact_name.__class__} ${1+1} $contact_name.upper()", VALUES)
    assert rendered.text == "${contact_name.__class__} ${1+1} Jane Doe.upper()"
    assert rendered.unknown == ()


def test_find_and_unknown_placeholders():
    text = "$a ${b} $$c $a ${ticket_number} $5"
    assert find_placeholders(text) == ["a", "b", "ticket_number"]
    assert unknown_placeholders(text, CATALOGUE) == ["a", "b"]
    assert unknown_placeholders(text, ["a", "b", "ticket_number"]) == []


# --- subjects -------------------------------------------------------------------


def test_subject_cannot_carry_a_header_injection():
    values = {"ticket_title": "Help\r\nBcc: victim@example.com\nX-Evil: 1"}
    rendered = render_subject("Re: $ticket_title", values)
    assert rendered.text == "Re: Help Bcc: victim@example.com X-Evil: 1"
    assert "\r" not in rendered.text and "\n" not in rendered.text


def test_subject_control_characters_become_single_spaces():
    rendered = render_subject("  A\t\x00B\x1b\u2028C\u0085D   E  ", {})
    assert rendered.text == "A B C D E"


def test_subject_is_capped():
    rendered = render_subject("$ticket_title", {"ticket_title": "x" * 1000})
    assert rendered.text == "x" * SUBJECT_MAX_CHARS
    assert len(render_subject("a " * 200, {}).text) <= SUBJECT_MAX_CHARS
    assert not render_subject("a " * 200, {}).text.endswith(" ")


def test_subject_reports_unknown_names():
    assert render_subject("About $ticket_name", VALUES) == Rendered("About $ticket_name", ("ticket_name",))


# --- HTML -----------------------------------------------------------------------


def test_html_escapes_values():
    rendered = render_html("Hi $contact_name", {"contact_name": '<script>alert("x")</script> & \'co\''})
    assert "<script>" not in rendered.text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;co&#x27;" in rendered.text


def test_html_escapes_the_template_text_too():
    rendered = render_html('<b onclick="x()">Bold</b> & $company_name', VALUES)
    assert "<b" not in rendered.text
    assert "&lt;b onclick=&quot;x()&quot;&gt;Bold&lt;/b&gt; &amp; Acme Corp" in rendered.text


def test_html_lines_become_breaks_and_blank_lines_paragraphs():
    rendered = render_html("Hello $contact_name,\n\nLine one\r\nLine two\n \n\n\nBye", VALUES)
    assert rendered.text.count("<p") == 3
    assert "Line one<br>\nLine two" in rendered.text
    assert [tag for tag, _ in parse_html(rendered.text).tags] == ["div", "p", "p", "br", "p"]


def test_html_keeps_a_paragraphs_leading_text_after_a_blank_line():
    rendered = render_html("One\n\n  $contact_name", {"contact_name": " <i>"})
    assert '<p style="margin: 0 0 1em 0;">   &lt;i&gt;</p>' in rendered.text


def test_html_turns_newlines_in_values_into_breaks():
    rendered = render_html("$reply_body", {"reply_body": "one\ntwo\n\nthree"})
    assert [tag for tag, _ in parse_html(rendered.text).tags] == ["div", "p", "br", "p"]


def test_html_links_http_urls_only():
    values = {"ticket_url": "https://helpdesk.example.com/t/1?a=1&b=2", "contact_name": "javascript:alert(1)"}
    rendered = render_html("See $ticket_url. Or $contact_name or ftp://x.example.", values)
    links = [attrs["href"] for tag, attrs in parse_html(rendered.text).tags if tag == "a"]
    assert links == ["https://helpdesk.example.com/t/1?a=1&b=2"]
    assert '<a href="https://helpdesk.example.com/t/1?a=1&amp;b=2">' in rendered.text
    assert "</a>. Or javascript:alert(1)" in rendered.text


def test_html_link_from_a_value_cannot_add_attributes():
    values = {"ticket_url": 'https://x.example/"onmouseover="alert(1)', "ticket_title": "http://a.example/<img>"}
    rendered = render_html("$ticket_url $ticket_title", values)
    parsed = parse_html(rendered.text)
    for tag, attrs in parsed.tags:
        assert tag in {"div", "p", "br", "a"}
        if tag == "a":
            assert set(attrs) == {"href"}
    assert "<img" not in rendered.text


def test_html_of_empty_body_is_an_empty_wrapper():
    assert [tag for tag, _ in parse_html(render_html("", {}).text).tags] == ["div"]


# --- the shared entry point ----------------------------------------------------


def test_render_mail_is_the_sum_of_its_parts():
    values = dict(sample_values(), ticket_title="Broken\r\nprinter <b>")
    mail = render_mail("Re: $ticket_title $odd", "Hello $contact_name $odd ${other}\n\nBye", values)
    assert isinstance(mail, RenderedMail)
    assert mail.subject == "Re: Broken printer <b> $odd"
    assert mail.text == "Hello Jane Doe $odd ${other}\n\nBye"
    assert mail.html == render_html("Hello $contact_name $odd ${other}\n\nBye", values).text
    assert mail.unknown == ("odd", "other")


def test_render_mail_honours_allowed_for_subject_and_body():
    mail = render_mail("$invite_url", "$invite_url", {"invite_url": "https://x.example/i"},
                       TEMPLATE_KINDS["agent_reply"].variables)
    assert mail.subject == "$invite_url" and mail.text == "$invite_url"
    assert mail.unknown == ("invite_url",)


def test_render_mail_accepts_a_one_shot_iterable_for_allowed():
    allowed = (name for name in ["contact_name"])
    mail = render_mail("$contact_name", "$contact_name", VALUES, allowed)
    assert (mail.subject, mail.text, mail.unknown) == ("Jane Doe", "Jane Doe", ())
