"""Every real-world mail of shared/corpus through ingest_mail: one outcome each, nothing raises, nothing
automatic is answered, and the tickets agree with another parser's reading of the stalwart samples."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from helpdesk import events
from helpdesk.extensions import db
from helpdesk.models import Attachment, InboundMail, OutboundMessage, Ticket
from helpdesk.services.attachments import attachment_store
from helpdesk.services.ingest import IngestResult, ingest_mail

HERE = Path(__file__).resolve()


def _corpus_root() -> Path:
    configured = os.environ.get("HELPDESK_CORPUS")
    if configured:
        return Path(configured)
    # CI clones the repository next to shared/, so the corpus is a sibling of the checkout.
    return HERE.parents[3] / "shared" / "corpus"


CORPUS = _corpus_root()
pytestmark = [
    pytest.mark.skipif(not CORPUS.is_dir(),
                       reason=f"mail corpus not found at {CORPUS}: set HELPDESK_CORPUS to the shared/corpus folder"),
    pytest.mark.usefixtures("clean_bucket"),
]


def _parse_tests() -> ModuleType:
    """Load the parser's corpus tests for their list of accepted differences with stalwart."""
    name = "helpdesk_tests_parse_corpus"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE.parents[1] / "parse" / "test_corpus.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _corpus_files() -> list[Path]:
    spamscope = CORPUS / "malformed-spamscope"
    return sorted(CORPUS.rglob("*.eml")) + sorted(
        p for p in spamscope.iterdir() if p.is_file() and not p.name.startswith("LICENSE"))


@pytest.fixture
def corpus_app(app_config):
    # The corpus arrives all at once and its test mails share senders (one Outlook sample author
    # wrote 50 of them): that is not a mail loop, so the loop guard is set out of reach here.
    app_config["INBOUND_LOOP_LIMIT"] = 1_000_000
    from helpdesk import create_app

    app = create_app(app_config)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def test_every_corpus_mail_gets_exactly_one_outcome(corpus_app, capsys):
    files = _corpus_files()
    assert len(files) > 700, f"expected the whole corpus under {CORPUS}, found {len(files)} files"
    notify_by_ticket: dict[int, bool] = {}

    def listen(ticket, **data) -> None:
        notify_by_ticket[ticket.id] = data["notify"]

    events.ticket_created.connect(listen)
    results: dict[str, IngestResult] = {}
    raised, seen_keys, seen_hashes = [], set(), set()
    timings: Counter[str] = Counter()
    try:
        for path in files:
            key = str(path.relative_to(CORPUS))
            raw = path.read_bytes()
            started = time.perf_counter()
            try:
                results[key] = ingest_mail(raw)
            except Exception as exc:  # noqa: BLE001 - collected so one report names every failing file
                raised.append(f"{key}: {type(exc).__name__}: {exc}")
                continue
            timings[key.split("/", 1)[0]] += time.perf_counter() - started
            result = results[key]
            if result.outcome == "duplicate":
                # Only the same Message-ID (or, without one, the same bytes) counts as the same mail.
                digest = hashlib.sha256(raw).hexdigest()
                assert result.message_id in seen_keys or digest in seen_hashes, key
            seen_keys.add(result.message_id)
            seen_hashes.add(hashlib.sha256(raw).hexdigest())
    finally:
        events.ticket_created.disconnect(listen)
    assert not raised, "\n".join(raised)

    outcomes = Counter(r.outcome for r in results.values())
    rows = list(db.session.scalars(db.select(InboundMail)))
    assert len(rows) == len(files) - outcomes["duplicate"]
    assert Counter(r.outcome for r in rows) == outcomes - Counter({"duplicate": outcomes["duplicate"]})
    for key, result in results.items():
        assert result.outcome in ("created", "appended", "ignored", "quarantined", "duplicate"), key
        assert result.reason, key
        if result.outcome == "quarantined":
            pytest.fail(f"{key} was quarantined: {result.reason}")

    # sisimai: bounces, complaints and auto-replies never get an automatic answer.
    parse_tests = _parse_tests()
    labels = json.loads((CORPUS / "bounces-autoreplies-sisimai" / "labels_from_filenames.json").read_text())
    answered = []
    automatic_tickets = set()
    for name, label in labels.items():
        if label["family"] == "is-not-bounce" or name.startswith("not/"):
            continue
        result = results[f"bounces-autoreplies-sisimai/{name}"]
        if result.outcome == "created":
            automatic_tickets.add(result.ticket_id)
            if notify_by_ticket[result.ticket_id] and name not in parse_tests.UNDETECTED_AUTOMATIC:
                answered.append(f"{name} ({label['family']})")
    assert not answered, "automatic mail would get a confirmation:\n" + "\n".join(answered)
    exempt = {results[f"bounces-autoreplies-sisimai/{n}"].ticket_id for n in parse_tests.UNDETECTED_AUTOMATIC}
    queued = db.session.scalars(db.select(OutboundMessage.ticket_id).where(
        OutboundMessage.ticket_id.in_(automatic_tickets - exempt))).all()
    assert queued == []

    total = sum(timings.values())
    with capsys.disabled():
        print(f"\ningest corpus: {len(files)} mails in {total:.1f}s ({len(files) / total:.0f} mails/s): "
              + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
        for folder, seconds in sorted(timings.items()):
            print(f"  {folder}: {seconds:.1f}s")


def test_stalwart_tickets_match_the_expected_titles_senders_and_attachments(corpus_app):
    root = CORPUS / "parsing-stalwart"
    expected = json.loads((root / "expected_summary.json").read_text(encoding="utf-8"))
    accepted = _parse_tests().ACCEPTED_MISMATCHES
    store = attachment_store()
    variants = _parse_tests()._variants
    problems, checked = [], Counter()
    first_name: dict[str, str] = {}
    for key, summary in sorted(expected.items()):
        result = ingest_mail((root / "eml" / key).read_bytes())
        if result.outcome == "ignored" and result.reason.startswith("empty mail"):
            # Fuzzed MIME with no header we can use and no body: nothing to make a ticket of. The other
            # parser found nothing either, except the zero-byte part the parser tests accept not keeping.
            checked["empty"] += 1
            if summary["subject"] or summary["from"] or (
                    summary["attachments"] and (key, "attachments") not in accepted):
                problems.append(f"{key}: ignored as empty, but stalwart read {summary}")
            continue
        # A duplicate is a byte-identical copy of an earlier sample (no Message-ID): same ticket, same answers.
        if result.outcome not in ("created", "duplicate"):
            problems.append(f"{key}: {result.outcome} ({result.reason})")
            continue
        ticket = db.session.get(Ticket, result.ticket_id)
        row = db.session.get(InboundMail, result.inbound_id)
        if (key, "subject") not in accepted:
            checked["subject"] += 1
            if ticket.title != ((summary["subject"] or "").strip() or "(no subject)"):
                problems.append(f"{key} title: {ticket.title!r} != {summary['subject']!r}")
        if (key, "from") not in accepted:
            checked["from"] += 1
            sender = (summary["from"] or [{}])[0]
            address, name = (sender.get("address") or "").lower(), sender.get("name") or ""
            if name and address:
                first_name.setdefault(address, name)
            contact = ticket.contact
            got = (row.sender, contact.email if contact else "", contact.name if contact else "")
            want = (address, address, first_name.get(address, "") if address else "")
            if got != want:
                problems.append(f"{key} sender: {got!r} != {want!r}")
        if (key, "attachments") not in accepted:
            checked["attachments"] += 1
            stored: list[Attachment] = ticket.attachments
            wanted = summary["attachments"]
            if len(stored) != len(wanted):
                problems.append(f"{key}: {len(stored)} attachments stored, {len(wanted)} expected")
            for want, got in zip(wanted, stored):
                if want["sha256"] is None or want["sha256"] == got.sha256:
                    continue
                # The other parser may hand text attachments back re-encoded; compare what we stored.
                data = store.read(got.storage_key)
                if hashlib.sha256(data).hexdigest() != got.sha256 or want["sha256"] not in variants(data, want["kind"]):
                    problems.append(f"{key}: {got.filename} sha256 {got.sha256} != {want['sha256']}")
    print(f"stalwart tickets: {len(expected)} mails; checked {dict(checked)}; {len(accepted)} accepted differences")
    assert not problems, "\n".join(problems)
