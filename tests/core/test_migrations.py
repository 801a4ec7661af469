"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from helpdesk.extensions import db
from helpdesk.models import EmailTemplate, SlaPolicy
from helpdesk.search import is_search_table


def _not_search(name, type_, parent_names):
    # The full-text tables are the triggers' business, kept out of the models on purpose.
    return not (type_ == "table" and is_search_table(name))


def test_models_and_migrations_agree(app):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                              "include_name": _not_search})
        diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_first_migration_seeds_templates_and_sla(app):
    from helpdesk.mail.render import TEMPLATE_KINDS

    kinds = set(db.session.scalars(db.select(EmailTemplate.kind)))
    assert kinds == set(TEMPLATE_KINDS)
    assert sorted(db.session.scalars(db.select(SlaPolicy.priority))) == ["high", "low", "normal", "urgent"]
