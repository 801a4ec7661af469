"""Admin → Settings → Email → Templates: list, editor, live preview, reset, test mail, read-only view."""
from __future__ import annotations

import html
import re

import pytest

from helpdesk.extensions import db
from helpdesk.mail.render import DEFAULT_TEMPLATES, TEMPLATE_KINDS
from helpdesk.models import EmailTemplate, OutboundMessage

BASE = "/admin/settings/email/templates"
HX = {"HX-Request": "true"}


def stored(kind: str) -> EmailTemplate:
    db.session.expire_all()
    return db.session.scalar(db.select(EmailTemplate).filter_by(kind=kind))


def test_list_shows_every_template_with_its_status_and_links(admin_client):
    page = admin_client.get(BASE).get_data(as_text=True)
    for kind in TEMPLATE_KINDS.values():
        assert html.escape(kind.label) in page
        assert f'href="{BASE}/{kind.key}"' in page
        assert f'href="{BASE}/{kind.key}/view"' in page
    assert page.count("Enabled</span>") == 5
    assert page.count("Default text") == 5
    assert 'aria-current="page">Templates</a>' in page  # the tab is marked


def test_list_shows_disabled_and_who_changed_it(admin_client):
    admin_client.auth.post(f"{BASE}/resolved", {"subject": "Done", "body": "Bye"})  # no "enabled": switched off
    page = admin_client.get(BASE).get_data(as_text=True)
    assert page.count("Disabled</span>") == 1
    assert "by Ada Admin" in page


def test_editor_shows_the_form_variables_and_preview(admin_client):
    page = admin_client.get(f"{BASE}/agent_reply").get_data(as_text=True)
    assert 'id="template-form"' in page
    assert 'value="Re: $ticket_title"' in page
    enabled = re.search(r'<input[^>]*name="enabled"[^>]*>', page).group(0)
    assert "checked" in enabled
    # This kind's variables only, as insert buttons.
    assert 'data-insert="$reply_body"' in page and 'data-insert="$invite_url"' not in page
    # The preview partial is in the page, live.
    assert 'id="template-preview"' in page and f'hx-post="{BASE}/agent_reply/preview"' in page
    assert "Re: Cannot log in after password reset" in page
    assert "data-confirm=" in page and f'action="{BASE}/agent_reply/reset"' in page
    assert "Sample data" in page


def test_unknown_kind_is_not_found(admin_client):
    assert admin_client.get(f"{BASE}/nope").status_code == 404


@pytest.mark.parametrize("method, path", [
    ("get", ""), ("get", "/new_ticket"), ("post", "/new_ticket"), ("post", "/new_ticket/preview"),
    ("post", "/new_ticket/reset"), ("post", "/new_ticket/send-test"),
])
def test_agents_are_refused(agent_client, method, path):
    if method == "get":
        response = agent_client.get(BASE + path)
    else:
        response = agent_client.auth.post(BASE + path, {"subject": "Hacked", "body": "Hacked"})
    assert response.status_code == 403
    assert stored("new_ticket").subject == DEFAULT_TEMPLATES["new_ticket"][0]


def test_signed_out_visitors_are_sent_to_sign_in(client):
    response = client.get(f"{BASE}/new_ticket/view")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_agents_see_the_read_only_preview(agent_client):
    response = agent_client.get(f"{BASE}/new_ticket/view")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "We received your request: Cannot log in after password reset" in page
    assert "Thank you for contacting Example Support." in page  # the configured company, not the sample's
    assert "<form" not in page.split("<main>", 1)[1]  # no edit controls
    assert "hx-post" not in page
    assert f'href="{BASE}/new_ticket"' not in page  # no link to the admin editor


def test_read_only_preview_shows_disabled_templates_too(agent_client):
    from helpdesk.services.email_templates import save_template

    save_template("resolved", "Closed $ticket_title", "Body $nonsense", False, None)
    db.session.commit()
    page = agent_client.get(f"{BASE}/resolved/view").get_data(as_text=True)
    assert "Closed Cannot log in after password reset" in page
    assert "switched off" in page
    assert "$nonsense is not a known placeholder" in page


def test_save_persists_records_the_admin_and_flashes(admin_client, admin):
    response = admin_client.auth.post(f"{BASE}/new_ticket", {
        "subject": "  Got it: $ticket_title  ", "body": "Hi $contact_name,\r\nthanks.\r\n", "enabled": "y"})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"{BASE}/new_ticket")
    template = stored("new_ticket")
    assert template.subject == "Got it: $ticket_title"
    assert template.body == "Hi $contact_name,\nthanks.\n"
    assert template.enabled is True
    assert template.updated_by_id == admin.id and template.updated_at is not None
    page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Template saved." in page
    assert "not a known placeholder" not in page


def test_unchecking_enabled_disables(admin_client):
    admin_client.auth.post(f"{BASE}/sla_breach", {"subject": "S", "body": "B"})
    assert stored("sla_breach").enabled is False


def test_validation_errors_are_shown_beside_the_fields_and_nothing_is_saved(admin_client):
    response = admin_client.auth.post(f"{BASE}/new_ticket", {"subject": "x" * 501, "body": "   "})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="subject-error"' in page and "longer than 500" in page
    assert 'id="body-error"' in page and "Write the text of the mail." in page
    assert stored("new_ticket").subject == DEFAULT_TEMPLATES["new_ticket"][0]

    page = admin_client.auth.post(f"{BASE}/new_ticket", {"subject": "", "body": "b"}).get_data(as_text=True)
    assert "Write a subject." in page


def test_unknown_placeholders_are_saved_with_a_warning_beside_the_field(admin_client):
    response = admin_client.auth.post(f"{BASE}/new_ticket", {
        "subject": "Hello $contcat_name", "body": "Body $reply_body", "enabled": "y"}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert stored("new_ticket").subject == "Hello $contcat_name"
    assert "Template saved." in page and "they will be sent as typed" in page
    subject_warnings = re.search(r'<div id="subject-warnings".*?</div>', page, re.S).group(0)
    body_warnings = re.search(r'<div id="body-warnings".*?</div>', page, re.S).group(0)
    assert "$contcat_name is not a known placeholder" in subject_warnings
    assert "$reply_body is not available in the New ticket confirmation template" in body_warnings
    assert "contcat" not in body_warnings


def test_preview_returns_the_partial_for_htmx_with_subject_html_and_text(admin_client):
    response = admin_client.auth.post(f"{BASE}/resolved/preview", {
        "subject": "Done: $ticket_title", "body": "Hello $contact_name,\n\nsee $ticket_url"}, headers=HX)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "HX-Request" in response.headers["Vary"]
    assert "<html" not in page and "<main>" not in page
    # The partial replaces itself, so it must stay live for the next keystroke.
    assert 'id="template-preview"' in page and f'hx-post="{BASE}/resolved/preview"' in page
    assert "<dd>Done: Cannot log in after password reset</dd>" in page
    assert 'class="preview-text">Hello Jane Doe,\n\nsee https://helpdesk.example.com/tickets/1042</pre>' in page
    srcdoc = html.unescape(re.search(r'srcdoc="([^"]*)"', page).group(1))
    assert "Hello Jane Doe,</p>" in srcdoc
    assert '<a href="https://helpdesk.example.com/tickets/1042">' in srcdoc
    assert 'sandbox=""' in page
    # Nothing was saved by previewing.
    assert stored("resolved").subject == DEFAULT_TEMPLATES["resolved"][0]


def test_preview_flags_unknown_placeholders_and_refreshes_the_field_warnings(admin_client):
    page = admin_client.auth.post(f"{BASE}/new_ticket/preview", {
        "subject": "Hi", "body": "Dear $contcat_name"}, headers=HX).get_data(as_text=True)
    assert "<li>$contcat_name is not a known placeholder</li>" in page
    assert 'class="preview-text">Dear $contcat_name</pre>' in page
    oob = re.search(r'<div id="body-warnings"[^>]*hx-swap-oob="true">(.*?)</div>', page, re.S)
    assert oob and "$contcat_name is not a known placeholder" in oob.group(1)
    assert re.search(r'<div id="subject-warnings"[^>]*hx-swap-oob="true">\s*</div>', page)


def test_preview_escapes_ticket_values(admin_client, make_ticket):
    ticket = make_ticket(title='<script>alert("x")</script> & more')
    page = admin_client.auth.post(f"{BASE}/new_ticket/preview", {
        "subject": "$ticket_title", "body": "About $ticket_title", "preview_ticket": str(ticket.id)},
        headers=HX).get_data(as_text=True)
    assert "<script>" not in page
    assert "<dd>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more</dd>" in page
    srcdoc = html.unescape(re.search(r'srcdoc="([^"]*)"', page).group(1))
    assert "<script>" not in srcdoc
    assert "About &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in srcdoc


def test_ticket_picker_lists_tickets_and_uses_the_chosen_ones_values(admin_client, make_ticket):
    ticket = make_ticket(title="Scanner jams", email="bob@customer.test")
    editor = admin_client.get(f"{BASE}/new_ticket").get_data(as_text=True)
    assert f'<option value="{ticket.id}" >#{ticket.number} Scanner jams</option>' in editor
    page = admin_client.auth.post(f"{BASE}/agent_reply/preview", {
        "subject": "#$ticket_number $ticket_title for $contact_email by $agent_name", "body": "b",
        "preview_ticket": str(ticket.id)}, headers=HX).get_data(as_text=True)
    assert f"<dd>#{ticket.number} Scanner jams for bob@customer.test by Ada Admin</dd>" in page


def test_ticket_picker_says_when_there_are_no_tickets(admin_client):
    page = admin_client.get(f"{BASE}/new_ticket").get_data(as_text=True)
    assert "No tickets yet: the preview uses sample data." in page


def test_preview_without_htmx_shows_the_whole_editor(admin_client):
    page = admin_client.auth.post(f"{BASE}/new_ticket/preview", {
        "subject": "Draft $ticket_number", "body": "b"}).get_data(as_text=True)
    assert "<main>" in page and 'id="template-form"' in page and "<dd>Draft 1042</dd>" in page
    assert "hx-swap-oob" not in page
    assert stored("new_ticket").subject == DEFAULT_TEMPLATES["new_ticket"][0]


def test_reset_restores_the_default(admin_client):
    admin_client.auth.post(f"{BASE}/agent_invite", {"subject": "Join", "body": "Now", "enabled": "y"})
    assert stored("agent_invite").subject == "Join"
    response = admin_client.auth.post(f"{BASE}/agent_invite/reset", follow_redirects=True)
    assert "Template reset to the default text." in response.get_data(as_text=True)
    assert (stored("agent_invite").subject, stored("agent_invite").body) == DEFAULT_TEMPLATES["agent_invite"]


@pytest.mark.parametrize("path", ["/new_ticket", "/new_ticket/preview", "/new_ticket/reset", "/new_ticket/send-test"])
def test_posts_without_the_csrf_token_are_rejected(admin_client, path):
    admin_client.auth.post(f"{BASE}/new_ticket", {"subject": "Before", "body": "b", "enabled": "y"})
    response = admin_client.post(BASE + path, data={"subject": "After", "body": "b"}, headers=HX)
    assert response.status_code == 400
    assert stored("new_ticket").subject == "Before"


def test_send_test_queues_the_previewed_text_to_the_admin_and_says_smtp_is_missing(admin_client):
    response = admin_client.auth.post(f"{BASE}/new_ticket/send-test", {
        "subject": "Draft $ticket_number", "body": "Unsaved $contact_name"}, headers=HX)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "<main>" not in page
    assert re.search(r'<div id="test-result" role="status" class="result bad">\s*Test mail queued to '
                     r'admin@example.test but not sent yet: SMTP is not configured', page)
    [message] = db.session.scalars(db.select(OutboundMessage)).all()
    assert (message.kind, message.to, message.automatic) == ("test", "admin@example.test", False)
    assert message.subject == "[Test] Draft 1042"
    assert message.text_body == "Unsaved Jane Doe" and "Unsaved Jane Doe" in message.html_body
    assert stored("new_ticket").subject == DEFAULT_TEMPLATES["new_ticket"][0]  # sending saves nothing


def test_send_test_goes_out_through_the_configured_smtp_server(admin_client, admin, plain_smtp_server):
    from helpdesk.services.smtp_config import save_config

    save_config({"host": plain_smtp_server.host, "port": plain_smtp_server.port, "security": "none",
                 "from_address": "helpdesk@example.test", "from_name": "Example Support", "timeout": 10}, admin)
    db.session.commit()
    response = admin_client.auth.post(f"{BASE}/resolved/send-test", {
        "subject": "Resolved: $ticket_title", "body": "Hello $contact_name,\n\nbye"}, headers=HX)
    page = response.get_data(as_text=True)
    assert re.search(r'class="result ok">\s*Test mail sent to admin@example.test.', page)
    [received] = plain_smtp_server.received
    assert received.rcpt_tos == ["admin@example.test"]
    mail = received.message
    assert mail["Subject"] == "[Test] Resolved: Cannot log in after password reset"
    assert mail["From"] == "Example Support <helpdesk@example.test>"
    assert mail.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Hello Jane Doe,\n\nbye\n"
    assert "Hello Jane Doe," in mail.get_body(("html",)).get_content()


def test_send_test_without_htmx_shows_the_result_in_the_editor(admin_client):
    page = admin_client.auth.post(f"{BASE}/new_ticket/send-test", {"subject": "S", "body": "B"}).get_data(as_text=True)
    assert "<main>" in page and 'id="template-form"' in page
    assert "Test mail queued to admin@example.test but not sent yet" in page
