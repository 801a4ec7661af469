"""Reply tokens, our Message-IDs and the [#1042] subject tag."""
from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.headerregistry import MessageIDHeader
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from helpdesk.mail.tokens import (
    MAX_TICKET_ID,
    make_message_id,
    may_be_our_message_id,
    normalise_subject,
    reply_token,
    subject_tag,
    tag_subject,
    ticket_id_from_message_ids,
    ticket_number_from_subject,
    verify_reply_token,
)

KEY = b"server secret for tests"
OTHER_KEY = b"someone else's secret"


def _flip(char: str) -> str:
    return "b" if char != "b" else "c"


# --- reply tokens ---------------------------------------------------------------


def test_token_names_the_ticket_and_verifies():
    token = reply_token(1042, KEY)
    assert re.fullmatch(r"t1042-[a-z2-7]{16}", token)
    assert verify_reply_token(token, KEY) == 1042


def test_token_is_stable_for_a_key_and_differs_between_tickets_and_keys():
    assert reply_token(7, KEY) == reply_token(7, KEY)
    assert reply_token(7, KEY) != reply_token(8, KEY)
    assert reply_token(7, KEY) != reply_token(7, OTHER_KEY)


def test_token_survives_a_change_of_case_and_surrounding_space():
    assert verify_reply_token(f"  {reply_token(55, KEY).upper()} ", KEY) == 55


def test_tampered_signature_fails():
    token = reply_token(1042, KEY)
    assert verify_reply_token(token[:-1] + _flip(token[-1]), KEY) is None
    assert verify_reply_token(token[:-1], KEY) is None


def test_signature_moved_to_another_ticket_fails():
    signature = reply_token(1042, KEY).split("-")[1]
    assert verify_reply_token(f"t1043-{signature}", KEY) is None
    assert verify_reply_token(f"t01042-{signature}", KEY) is None


def test_token_from_another_key_fails():
    assert verify_reply_token(reply_token(1042, OTHER_KEY), KEY) is None


def test_keys_differing_only_by_trailing_zero_bytes_are_different_keys():
    # Plain HMAC pads short keys with zeros and would accept this token.
    assert verify_reply_token(reply_token(1, b"k"), b"k\0") is None


@pytest.mark.parametrize("garbage", ["", "t", "t-", "1042", "t1042", "t1042-", "x1042-aaaaaaaaaaaaaaaa",
                                     "t0-aaaaaaaaaaaaaaaa", "t1042-aaaaaaaaaaaaaaa1", "t" + "9" * 40 + "-a",
                                     "t99999999999999999999-aaaaaaaaaaaaaaaa"])
def test_garbage_tokens_fail_without_raising(garbage):
    assert verify_reply_token(garbage, KEY) is None


@pytest.mark.parametrize("bad_id", [0, -1, True, MAX_TICKET_ID + 1, "1042", 1042.0])
def test_token_refuses_ids_that_name_no_ticket(bad_id):
    with pytest.raises(ValueError):
        reply_token(bad_id, KEY)


def test_empty_key_is_a_configuration_error():
    with pytest.raises(ValueError, match="key is empty"):
        reply_token(1, b"")


# --- Message-IDs ----------------------------------------------------------------


def test_message_id_carries_the_token_and_a_random_part():
    message_id = make_message_id(1042, KEY, "helpdesk.example.com")
    match = re.fullmatch(r"<hd\.(t1042-[a-z2-7]{16})\.([a-z2-7]+)@helpdesk\.example\.com>", message_id)
    assert match, message_id
    assert match.group(1) == reply_token(1042, KEY)
    assert make_message_id(1042, KEY, "helpdesk.example.com") != message_id


def test_message_id_without_ticket_has_no_token():
    message_id = make_message_id(None, KEY, "example.com")
    assert re.fullmatch(r"<hd\.[a-z2-7]+@example\.com>", message_id)
    assert ticket_id_from_message_ids([message_id], KEY) is None


def test_our_message_ids_are_recognised_before_any_lookup():
    for ticket_id in (None, 1, 1042):
        ours = make_message_id(ticket_id, KEY, "Helpdesk.Example.com")
        assert may_be_our_message_id(ours) and may_be_our_message_id(f"  {ours.upper()} ")
    assert not may_be_our_message_id(make_msgid(domain="customer.example"))
    assert not may_be_our_message_id("<hdx.1@example.com>") and not may_be_our_message_id("hd.1@example.com")


def test_message_id_domain_is_ascii_and_lower_case():
    assert make_message_id(None, KEY, "Bücher.Example.").endswith("@xn--bcher-kva.example>")


@pytest.mark.parametrize("domain", ["", " ", "exa mple.com", "a@b", "<x>", "-bad.com", "a..b", "x" * 70 + ".com"])
def test_message_id_refuses_unusable_domains(domain):
    with pytest.raises(ValueError):
        make_message_id(1, KEY, domain)


def test_message_id_survives_a_round_trip_through_the_email_package():
    message_id = make_message_id(1042, KEY, "helpdesk.example.com")
    outgoing = EmailMessage(policy=policy.SMTP)
    outgoing["Message-ID"] = message_id
    outgoing["Subject"] = "[#2042] Printer"
    outgoing.set_content("hello")
    parsed = message_from_bytes(outgoing.as_bytes(), policy=policy.default)
    header = parsed["Message-ID"]
    assert isinstance(header, MessageIDHeader)
    assert str(header) == message_id
    assert ticket_id_from_message_ids([str(header)], KEY) == 1042


def test_ticket_is_found_from_a_replys_threading_headers():
    ours = make_message_id(1042, KEY, "helpdesk.example.com")
    theirs = make_msgid(domain="mail.customer.example")
    reply = EmailMessage(policy=policy.SMTP)
    reply["Message-ID"] = theirs
    reply["In-Reply-To"] = theirs  # a client answering its own earlier mail in the thread
    reply["References"] = f"{make_msgid(domain='x.example')} {ours} {theirs}"
    reply.set_content("thanks")
    parsed = message_from_bytes(reply.as_bytes(), policy=policy.default)
    assert ticket_id_from_message_ids([parsed["In-Reply-To"], parsed["References"]], KEY) == 1042


def test_first_valid_token_wins_and_invalid_ones_are_skipped():
    first = make_message_id(11, KEY, "example.com")
    second = make_message_id(22, KEY, "example.com")
    forged = first.replace("t11-", "t33-")
    foreign = make_message_id(44, OTHER_KEY, "example.com")
    assert ticket_id_from_message_ids([forged, foreign, second, first], KEY) == 22
    assert ticket_id_from_message_ids([f"{forged} {first}"], KEY) == 11
    assert ticket_id_from_message_ids(iter([first]), KEY) == 11


def test_tampered_message_id_is_refused():
    message_id = make_message_id(1042, KEY, "example.com")
    at = message_id.index(".", 4)  # the dot ending the token
    tampered = message_id[: at - 1] + _flip(message_id[at - 1]) + message_id[at:]
    assert ticket_id_from_message_ids([tampered], KEY) is None
    assert ticket_id_from_message_ids([message_id], OTHER_KEY) is None


@pytest.mark.parametrize("ids", [[], [""], ["<>"], ["no brackets"], ["<abc@example.com>"],
                                 [f"<x.{reply_token(5, KEY)}.abc@example.com>"],
                                 [f"<{reply_token(5, KEY)}@example.com>"]])
def test_ids_that_are_not_ours_name_no_ticket(ids):
    assert ticket_id_from_message_ids(ids, KEY) is None


def test_bare_message_id_without_brackets_is_read():
    assert ticket_id_from_message_ids([make_message_id(9, KEY, "example.com").strip("<>")], KEY) == 9


# --- subject tags ---------------------------------------------------------------


def test_subject_tag_and_round_trip():
    assert subject_tag(1042) == "[#1042]"
    assert tag_subject("Printer broken", 1042) == "[#1042] Printer broken"
    assert ticket_number_from_subject(tag_subject("Printer broken", 1042)) == 1042


def test_tag_is_added_only_once():
    once = tag_subject("Printer broken", 1042)
    assert tag_subject(once, 1042) == once
    assert tag_subject("Re: [#1042] Printer broken", 1042) == "Re: [#1042] Printer broken"
    assert tag_subject("Printer broken [#1042]", 1042) == "Printer broken [#1042]"


def test_tag_on_empty_subject():
    assert tag_subject("", 7) == "[#7]"
    assert tag_subject("   ", 7) == "[#7]"


def test_another_tickets_tag_does_not_count_as_ours():
    assert tag_subject("[#10421] Printer", 1042) == "[#1042] [#10421] Printer"


@pytest.mark.parametrize("bad", [0, -5, True])
def test_subject_tag_refuses_non_numbers(bad):
    with pytest.raises(ValueError):
        subject_tag(bad)


@pytest.mark.parametrize("subject, number", [
    ("Re: [#1042] Printer", 1042),
    ("AW: Printer [#77]", 77),
    ("[#5] and [#6]", 5),
    ("Printer", None),
    ("[#] x", None),
    ("[#0] x", None),
    ("[# 12] x", None),
    ("#1042 x", None),
    ("[#12a]", None),
])
def test_ticket_number_from_subject(subject, number):
    assert ticket_number_from_subject(subject) == number


@pytest.mark.parametrize("subject", [
    "Printer broken",
    "Re: Printer broken",
    "RE: re: Printer broken",
    "Fwd: FW: Fw: Printer broken",
    "AW: WG: SV: VS: Printer broken",
    "Antw: Rif: R: TR: Printer broken",
    "Re[2]: Printer broken",
    "Re(3): Printer broken",
    "Re : TR : Printer broken",
    "[#1042] Printer broken",
    "Re: [#1042]  Printer   broken",
    "Printer broken [#1042]",
    "  re:aw:Printer\tBROKEN  ",
])
def test_normalise_subject_makes_replies_compare_equal(subject):
    assert normalise_subject(subject) == "printer broken"


def test_normalise_subject_keeps_words_that_only_look_like_prefixes():
    assert normalise_subject("Regarding: invoices") == "regarding: invoices"
    assert normalise_subject("Report: Re: x") == "report: re: x"
    assert normalise_subject("Re:") == ""
