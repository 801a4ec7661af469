"""trim_reply() on replies from many mail programs and languages."""
from __future__ import annotations

import pytest

from helpdesk.mail.trim import trim_reply

ANSWER = "Thanks, that fixed it.\nThe invoice is fine now."
HISTORY = "> Please try again.\n> \n> Agent"


@pytest.mark.parametrize("attribution", [
    "On Mon, Feb 1, 2016 at 4:58 AM, Some One <foo@example.com> wrote:",
    "On Mon, Feb 1, 2016 at 4:58 AM, Some One <\nfoo@example.com> wrote:",
    "Am 03.02.2016 um 15:35 schrieb Max Mustermann <max@example.de>:",
    "Max Mustermann <max@example.de> schrieb am Fr., 28.\nApr. 2017 um 11:53 Uhr:",
    "Le 4 janv. 2016 à 19:03, \"Neil\" <neil@example.fr> a écrit :",
    "El jueves, 21 de noviembre de 2013, Ana escribió:",
    "Em 2 de fevereiro de 2015 10:58, Ana <ana@example.pt> escreveu:",
    "Il 26 marzo 2016 alle 13.16 Sam <sam@example.it> ha scritto:",
    "Op 2 feb. 2015 om 05:28 heeft Jan <jan@example.nl> het volgende geschreven:",
    "Den 5 juni 2017 12:22 skrev Sven <sven@example.se>:",
    "Dnia 14 lip 2015 o godz. 00:25 Michał <m@example.pl> napisał(a):",
    "20 окт. 2016 г. 19:37 пользователь Иван <ivan@example.ru> написал:",
    "在 2016年12月12日，下午8:45，张三 <zhang@example.cn> 写道：",
    "2016年12月12日(月) 20:45 山田太郎 <yamada@example.jp>:",
    "2016-10-24 15:36 GMT+02:00 Foo Bar <foo@example.com>:",
])
def test_attribution_lines_in_many_languages(attribution: str) -> None:
    visible, elided = trim_reply(f"{ANSWER}\n\n{attribution}\n\n{HISTORY}\n")
    assert visible == ANSWER
    assert "Please try again." in elided


@pytest.mark.parametrize("history", [
    "-----Original Message-----\nFrom: Agent\nSent: Monday\nTo: Customer\nSubject: Re: invoice\n\nold text",
    "________________________________\nFrom: Agent <agent@example.com>\nSent: Thursday, 28 January 2016\n"
    "To: Customer\nSubject: invoice\n\nold text",
    "From: Agent <agent@example.com>\nDate: Monday, February 8, 2016 11:44 AM\nTo: Customer\n"
    "Subject: invoice\n\nold text",
    "*From:* Agent\n*Sent:* 2016-01-27\n*To:* info@example.com\n*Subject:* invoice\n\nold text",
    "Von: Agent <agent@example.de>\nGesendet: Montag, 1. Februar 2016 10:00\nAn: Kunde\nBetreff: Rechnung\n\nold",
    "-----Ursprüngliche Nachricht-----\nVon: Agent\nold text",
    "---------- Forwarded message ---------\nFrom: Agent <agent@example.com>\nDate: Tue, Jan 1, 2019\n\nold",
    "-- \nJane Customer\nACME Corp.",
])
def test_outlook_blocks_forward_markers_and_signature_delimiter(history: str) -> None:
    visible, elided = trim_reply(f"{ANSWER}\n\n{history}\n")
    assert visible == ANSWER
    assert elided.endswith(history.splitlines()[-1])


def test_mobile_signatures_are_cut_wherever_they_are() -> None:
    text = f"{ANSWER}\n\nSent from my iPhone\n\nEnvoyé depuis mon iPhone\nVon meinem Mobilgerät gesendet\n" \
           "Get Outlook for iOS"
    visible, elided = trim_reply(text)
    assert visible == ANSWER
    assert "Sent from my iPhone" in elided


def test_quote_only_mail_is_kept_whole() -> None:
    assert trim_reply("> just a quote\n> nothing else\n") == ("> just a quote\n> nothing else", "")


def test_everything_cut_returns_the_input() -> None:
    text = "On Mon, Feb 1, 2016 at 4:58 AM, Some One <foo@example.com> wrote:\n> old\n"
    visible, elided = trim_reply(text)
    assert visible == text.strip() and elided == ""


def test_bottom_posted_answer_below_the_quote_is_kept() -> None:
    text = f"On Mon, Aug 19, 2013 at 2:36 AM, Agent <agent@example.com> wrote:\n\n{HISTORY}\n\n{ANSWER}\n"
    assert trim_reply(text)[0] == ANSWER


def test_inline_answers_between_quotes_are_kept() -> None:
    text = ("Hi,\nOn Tue, 2011-03-01 at 18:02 +0530, Agent wrote:\n> Which version?\n\n2.1\n\n"
            "> And the browser?\n\nFirefox\n\n> Regards\n> Agent\n")
    visible, elided = trim_reply(text)
    assert visible == "Hi,\n> Which version?\n\n2.1\n\n> And the browser?\n\nFirefox"
    assert elided.startswith("On Tue") and elided.endswith("> Agent")


def test_text_quote_text_without_attribution_is_kept() -> None:
    text = "> This is a quote.\n\nAnd this is my answer."
    assert trim_reply(text) == (text, "")


def test_code_fences_are_never_delimiters() -> None:
    text = "Here is my config:\n\n```\n####\n---\n> not a quote\n```\n\nThanks"
    assert trim_reply(text) == (text, "")


def test_prose_starting_with_on_is_not_an_attribution() -> None:
    text = "On this day\n\nI wrote something\n\nwhich was very interesting."
    assert trim_reply(text)[0] == text


def test_windows_line_ends_and_blank_input() -> None:
    assert trim_reply("Yes.\r\n\r\n-- \r\nBob\r\n") == ("Yes.", "-- \nBob")
    assert trim_reply("") == ("", "")
    assert trim_reply("  \n\n ") == ("", "")
