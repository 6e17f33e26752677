"""cross measurements: every pick of a run measured on every device and runtime of its table

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 05:00:00

One row per (run, device, runtime, architecture): the latest side-by-side measurement of the run's
cross-device table ("the pick for A measured on B").
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'cross_measurements',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('backend', sa.String(length=32), nullable=False),
        sa.Column('arch_hash', sa.String(length=64), nullable=False),
        sa.Column('latency_ms', sa.Float(), nullable=True),
        sa.Column('stats', sa.Text(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('measured_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'],
                                name=op.f('fk_cross_measurements_run_id_runs'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_cross_measurements_device_id_devices'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_cross_measurements')),
        sa.UniqueConstraint('run_id', 'device_id', 'backend', 'arch_hash',
                            name=op.f('uq_cross_measurements_run_id_device_id_backend_arch_hash')),
    )


def downgrade():
    op.drop_table('cross_measurements')
