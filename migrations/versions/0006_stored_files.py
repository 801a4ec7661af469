"""indexes on the keys of stored files, for the sweep that removes the files no row names

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 06:00:00
"""
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_attachments_storage_key', 'attachments', ['storage_key'])
    op.create_index('ix_inbound_mails_raw_key', 'inbound_mails', ['raw_key'])


def downgrade():
    op.drop_index('ix_inbound_mails_raw_key', table_name='inbound_mails')
    op.drop_index('ix_attachments_storage_key', table_name='attachments')
