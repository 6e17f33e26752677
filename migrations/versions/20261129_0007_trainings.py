"""trainings: architectures of a run retrained from scratch, with their test accuracy and files

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 18:30:00

A run's sample (or its MobileNetV2 reference) retrained by a `train` worker from the dashboard:
status, progress, the retrained validation and test accuracy, and the directory that holds the
trained weights and their ONNX export.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'trainings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('sample_id', sa.Integer(), nullable=True),
        sa.Column('arch_hash', sa.String(length=64), nullable=False),
        sa.Column('arch_json', sa.Text(), nullable=False),
        sa.Column('label', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('epochs', sa.Integer(), nullable=False),
        sa.Column('seed', sa.Integer(), nullable=False),
        sa.Column('epoch', sa.Integer(), nullable=True),
        sa.Column('loss', sa.Float(), nullable=True),
        sa.Column('val_accuracy', sa.Float(), nullable=True),
        sa.Column('test_accuracy', sa.Float(), nullable=True),
        sa.Column('train_time_s', sa.Float(), nullable=True),
        sa.Column('directory', sa.String(length=1024), nullable=True),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'running', 'finished', 'failed', 'cancelled', "
                           "'interrupted')", name=op.f('ck_trainings_status')),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_trainings_run_id_runs'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['sample_id'], ['samples.id'],
                                name=op.f('fk_trainings_sample_id_samples'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_trainings')),
    )
    op.create_index('ix_trainings_run_id_arch_hash', 'trainings', ['run_id', 'arch_hash'],
                    unique=False)


def downgrade():
    op.drop_index('ix_trainings_run_id_arch_hash', table_name='trainings')
    op.drop_table('trainings')
