"""index inbound mails by sender and time, for the loop guard

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:55:00

The loop guard counts a sender's mails within the last minutes for every mail a poll takes;
during a burst every row is that recent, so the (outcome, created_at) index scanned them all.
"""
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('inbound_mails', schema=None) as batch_op:
        batch_op.create_index('ix_inbound_mails_sender_created', ['sender', 'created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('inbound_mails', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_mails_sender_created')
