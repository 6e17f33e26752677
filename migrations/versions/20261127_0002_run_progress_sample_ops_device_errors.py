"""run progress, sample ops, device errors and LUT time; a covering index for the Pareto query

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 21:16:18.445234

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('lut_profiled_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('space', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('progress', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('message', sa.Text(), nullable=True))

    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ops', sa.Text(), nullable=True))
        batch_op.drop_index('ix_samples_run_id_latency_ms')
        batch_op.create_index('ix_samples_run_id_latency_ms_accuracy',
                              ['run_id', 'latency_ms', 'accuracy'], unique=False)



def downgrade():
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index('ix_samples_run_id_latency_ms_accuracy')
        batch_op.create_index('ix_samples_run_id_latency_ms', ['run_id', 'latency_ms'], unique=False)
        batch_op.drop_column('ops')

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('message')
        batch_op.drop_column('progress')
        batch_op.drop_column('space')

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('lut_profiled_at')
        batch_op.drop_column('error')

