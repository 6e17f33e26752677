"""specialisations: a finished run's supernet searched again for new targets, devices, runtimes

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 02:00:00

A `specialise` worker from the dashboard: the targets it picks for (T, or the fraction of the
uniform expectation its worker turns into T; memory), where it measures
(a device or a group) and on which runtime, its progress in generations, and its pick (the picked
sample as the worker's summary gives it, JSON), kept with the parent run.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'specialisations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('target_latency_ms', sa.Float(), nullable=True),
        sa.Column('target_latency_fraction', sa.Float(), nullable=True),
        sa.Column('target_memory_mb', sa.Float(), nullable=True),
        sa.Column('device_id', sa.Integer(), nullable=True),
        sa.Column('group_id', sa.Integer(), nullable=True),
        sa.Column('backend', sa.String(length=32), nullable=False),
        sa.Column('generations', sa.Integer(), nullable=False),
        sa.Column('generation', sa.Integer(), nullable=True),
        sa.Column('pick', sa.Text(), nullable=True),
        sa.Column('directory', sa.String(length=1024), nullable=True),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('node', sa.String(length=255), nullable=True),
        sa.Column('message', sa.Text(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'running', 'finished', 'failed', 'cancelled', "
                           "'interrupted')", name=op.f('ck_specialisations_status')),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_specialisations_run_id_runs'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_specialisations_device_id_devices'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['group_id'], ['device_groups.id'],
                                name=op.f('fk_specialisations_group_id_device_groups'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_specialisations')),
    )


def downgrade():
    op.drop_table('specialisations')
