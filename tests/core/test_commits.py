"""Grouped commits: atomic each, durable together at the next durable commit (SQLite and PostgreSQL)."""
from __future__ import annotations

from sqlalchemy import text

from helpdesk.extensions import db, durable_commit, group_commits
from helpdesk.services import lookups


def waits_for_disk() -> bool:
    """Tell whether the current transaction's commit waits for the disk."""
    if db.engine.dialect.name == "sqlite":
        return db.session.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL; NORMAL is 1
    return db.session.execute(text("SHOW synchronous_commit")).scalar() == "on"


def test_only_the_durable_commit_of_a_group_waits_for_the_disk(app):
    assert waits_for_disk()
    db.session.commit()
    with group_commits():
        assert not waits_for_disk()
        db.session.commit()
        with durable_commit():
            assert waits_for_disk()
            db.session.commit()
        assert not waits_for_disk()
        db.session.commit()
    # Outside a group (every web request) each commit waits for the disk again.
    assert waits_for_disk()
    db.session.commit()


def test_shared_lookups_outlive_commits_and_transaction_lookups_do_not(app):
    loads = []

    def load():
        loads.append(1)
        return len(loads)

    assert lookups.cached("answer", load) == 1 and lookups.cached("answer", load) == 1
    db.session.commit()
    assert lookups.cached("answer", load) == 2  # a new transaction reads afresh
    with lookups.shared():
        assert lookups.cached("answer", load) == 3
        db.session.commit()
        assert lookups.cached("answer", load) == 3  # one read for the whole poll
        lookups.forget("answer")
        assert lookups.cached("answer", load) == 4
    db.session.commit()
    assert lookups.cached("answer", load) == 5
