"""final samples: a search's finalists measured again at the end

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 18:00:00

A search now ends by measuring its most accurate architectures near T again, side by side, each as
a sample of kind 'final' whose latency is the median of those rounds; the pick counts a finalist
only as measured then. Downgraded, they become 'sampled' rows of their epoch after the last, which
no other sample holds: nothing is lost, and a run's pick still points at its row.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

KINDS = ("argmax", "sampled")


def _kinds(kinds):
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_samples_kind'), type_='check')
        batch_op.create_check_constraint(
            batch_op.f('ck_samples_kind'), "kind IN ({})".format(", ".join(repr(k) for k in kinds)))


def upgrade():
    _kinds(KINDS + ("final",))


def downgrade():
    op.execute("UPDATE samples SET kind = 'sampled' WHERE kind = 'final'")
    _kinds(KINDS)
