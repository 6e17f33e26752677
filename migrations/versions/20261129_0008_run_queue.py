"""run queue: when a run joined the queue of runs waiting for a slot

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 19:00:00

At most MAX_RUNS searches run at once; the others wait as 'queued', first in line first. A resumed
run joins the queue again at its end. Null for runs from before.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('queued_at')
