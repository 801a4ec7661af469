"""The routing rules on their own: plain ParsedMail and RoutingContext in, a Decision out, no app."""
from __future__ import annotations

from helpdesk.mail.parse import ParsedAttachment, ParsedMail, parse
from helpdesk.mail.route import (RoutingContext, TaggedTicket, bounced_ticket_id, decide, own_addresses,
                                 reply_token_ticket_id, tagged_ticket_number)
from helpdesk.mail.tokens import make_message_id

KEY = b"route test key"


def mail(**fields) -> ParsedMail:
    values = {"message_id": "<m1@customer.test>", "subject": "Printer on fire", "from_name": "Jane",
              "from_address": "jane@customer.test", "text": "It smokes.", "size": 2000}
    values.update(fields)
    return ParsedMail(**values)


def test_a_plain_mail_is_a_new_ticket_that_gets_a_confirmation() -> None:
    decision = decide(mail(), RoutingContext())
    assert (decision.kind, decision.ticket_id, decision.automatic) == ("new_ticket", None, False)
    assert decision.reason == "new mail"


def test_a_reply_token_makes_a_comment_on_that_ticket() -> None:
    decision = decide(mail(subject="Re: something else"), RoutingContext(ticket_id_by_token=42))
    assert (decision.kind, decision.ticket_id, decision.internal) == ("comment", 42, False)
    assert "reply token" in decision.reason


def test_the_token_is_read_from_in_reply_to_or_references_and_must_be_signed_with_our_key() -> None:
    ours = make_message_id(42, KEY, "helpdesk.test")
    assert reply_token_ticket_id(mail(in_reply_to=[ours]), KEY) == 42
    assert reply_token_ticket_id(mail(references=["<a@b>", ours]), KEY) == 42
    assert reply_token_ticket_id(mail(in_reply_to=[ours]), b"another key") is None
    forged = ours.replace("hd.t42-", "hd.t43-")
    assert reply_token_ticket_id(mail(in_reply_to=[forged]), KEY) is None


def test_a_subject_tag_from_the_tickets_contact_makes_a_comment() -> None:
    tagged = TaggedTicket(7, "jane@customer.test", "Printer on fire")
    decision = decide(mail(subject="AW: [#1007] Printer on fire"), RoutingContext(ticket_by_subject_tag=tagged))
    assert (decision.kind, decision.ticket_id) == ("comment", 7)
    assert "same subject" in decision.reason
    renamed = decide(mail(subject="[#1007] now the scanner too"), RoutingContext(ticket_by_subject_tag=tagged))
    assert (renamed.kind, renamed.ticket_id) == ("comment", 7)
    assert "subject changed" in renamed.reason


def test_a_subject_tag_from_anyone_else_makes_a_new_ticket() -> None:
    tagged = TaggedTicket(7, "jane@customer.test", "Printer on fire")
    decision = decide(mail(subject="Re: [#1007] Printer on fire", from_address="mallory@elsewhere.test"),
                      RoutingContext(ticket_by_subject_tag=tagged))
    assert (decision.kind, decision.ticket_id) == ("new_ticket", None)
    assert "not from that ticket's contact" in decision.reason
    no_contact = TaggedTicket(7, None, "Printer on fire")
    assert decide(mail(subject="[#1007]"), RoutingContext(ticket_by_subject_tag=no_contact)).kind == "new_ticket"


def test_the_subject_tag_is_read_from_the_subject() -> None:
    assert tagged_ticket_number(mail(subject="SV: Re: [#1042] Printer")) == 1042
    assert tagged_ticket_number(mail(subject="Printer #1042")) is None


def test_mail_from_our_own_address_is_ignored_even_when_it_answers_a_ticket() -> None:
    ctx = RoutingContext(own_addresses=own_addresses(["Support@Example.test", "", None, "not-an-address"]),
                         ticket_id_by_token=3)
    assert ctx.own_addresses == {"support@example.test"}
    decision = decide(mail(from_address="support@example.test"), ctx)
    assert (decision.kind, decision.automatic) == ("ignore", True)
    assert "our own address" in decision.reason


def test_automatic_mail_still_makes_its_ticket_or_comment_but_never_an_automatic_reply() -> None:
    ooo = mail(auto_submitted=True, auto_reason="Auto-Submitted: auto-replied")
    new = decide(ooo, RoutingContext())
    assert (new.kind, new.automatic) == ("new_ticket", True)
    assert "Auto-Submitted: auto-replied" in new.reason
    reply = decide(ooo, RoutingContext(ticket_id_by_token=5))
    assert (reply.kind, reply.ticket_id, reply.automatic) == ("comment", 5, True)


def test_a_bounce_of_our_mail_becomes_an_internal_note_and_names_the_bounced_mail() -> None:
    ours = make_message_id(9, KEY, "helpdesk.test")
    bounce = mail(from_address="mailer-daemon@mx.customer.test", is_bounce=True, auto_submitted=True,
                  auto_reason="delivery status notification", bounced_message_ids=[ours])
    assert bounced_ticket_id(bounce, KEY) == 9
    decision = decide(bounce, RoutingContext(bounced_ticket_id=9, bounced_outbox_ids=[ours]))
    assert (decision.kind, decision.ticket_id, decision.internal, decision.automatic) == ("comment", 9, True, True)
    assert decision.bounce_of == (ours,)


def test_a_bounce_is_never_a_reply_even_with_our_token_in_its_references() -> None:
    bounce = mail(is_bounce=True, auto_submitted=True, in_reply_to=[make_message_id(9, KEY, "helpdesk.test")])
    decision = decide(bounce, RoutingContext(ticket_id_by_token=9))
    assert decision.kind == "ignore"
    assert "bounce of a mail we did not send" in decision.reason


def test_bounces_of_mail_without_a_ticket_are_ignored_but_still_name_our_mail() -> None:
    ours = make_message_id(None, KEY, "helpdesk.test")
    bounce = mail(is_bounce=True, auto_submitted=True, bounced_message_ids=[ours])
    assert bounced_ticket_id(bounce, KEY) is None
    decision = decide(bounce, RoutingContext(bounced_outbox_ids=[ours]))
    assert (decision.kind, decision.bounce_of) == ("ignore", (ours,))


def test_too_many_mails_from_one_sender_are_quarantined_as_a_loop() -> None:
    assert decide(mail(), RoutingContext(recent_count_from_sender=2, loop_limit=3)).kind == "new_ticket"
    decision = decide(mail(), RoutingContext(recent_count_from_sender=3, loop_limit=3, loop_window_seconds=600,
                                             ticket_id_by_token=4))
    assert (decision.kind, decision.automatic) == ("quarantine", True)
    assert decision.reason == "suspected mail loop: more than 3 mails from jane@customer.test within 10 minutes"


def test_bounces_are_not_held_by_the_loop_guard() -> None:
    bounce = mail(is_bounce=True, auto_submitted=True)
    assert decide(bounce, RoutingContext(recent_count_from_sender=99, loop_limit=3)).kind == "ignore"


def test_a_mail_over_the_size_limit_is_routed_as_usual_but_flagged() -> None:
    big = mail(size=30 * 1024 * 1024)
    decision = decide(big, RoutingContext(max_size=25 * 1024 * 1024))
    assert (decision.kind, decision.too_large) == ("new_ticket", True)
    assert decide(mail(size=100), RoutingContext(max_size=100)).too_large is False


def test_mail_without_a_sender_makes_a_ticket_nobody_is_mailed_about() -> None:
    decision = decide(mail(from_address="", from_name=""), RoutingContext())
    assert (decision.kind, decision.automatic) == ("new_ticket", True)


def test_an_empty_mail_is_ignored() -> None:
    decision = decide(ParsedMail(), RoutingContext())
    assert decision.kind == "ignore"
    assert decision.reason == "empty mail: no sender and no content"
    with_file = ParsedMail(attachments=[ParsedAttachment("a.bin", "application/octet-stream", b"x")])
    assert decide(with_file, RoutingContext()).kind == "new_ticket"


def test_garbage_bytes_parse_to_something_routable() -> None:
    for raw in (b"", b"\x00\xff\xfe", b"no headers at all\r\n\r\n", bytes(range(256)) * 20):
        assert decide(parse(raw), RoutingContext()).kind in {"new_ticket", "ignore"}
