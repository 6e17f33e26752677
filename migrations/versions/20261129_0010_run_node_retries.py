"""workers on a cluster: where a run's or a retraining's worker runs; a run's automatic resumes

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 20:30:00

With the Ray executor a run's worker runs on a cluster node; when that node is lost the run resumes
from its checkpoint by itself, at most three times, and each retry is recorded. Null for rows from
before, and for local workers.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('node', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('retries', sa.Text(), nullable=True))
    with op.batch_alter_table('trainings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('node', sa.String(length=255), nullable=True))


def downgrade():
    with op.batch_alter_table('trainings', schema=None) as batch_op:
        batch_op.drop_column('node')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('retries')
        batch_op.drop_column('node')
