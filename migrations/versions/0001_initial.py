"""Goals, achievements (with their exit-command outbox columns) and the enrollment projection.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "goals",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("workflow_id", sa.Text, nullable=False),
        sa.Column("goal_type", sa.Text, nullable=False),
        sa.Column("criteria", pg.JSONB, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
    )
    op.create_index("ix_goals_account_workflow", "goals", ["account_id", "workflow_id"])

    op.create_table(
        "achievements",
        sa.Column("enrollment_id", sa.Text, primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("workflow_id", sa.Text, nullable=False),
        sa.Column("contact_id", sa.Text, nullable=False),
        sa.Column("goal_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("goal_type", sa.Text, nullable=False),
        sa.Column("achieved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger_event_id", sa.Text, nullable=False),
        sa.Column("trigger_event", pg.JSONB, nullable=False),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("command_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "ix_achievements_account_workflow_time",
        "achievements",
        ["account_id", "workflow_id", "achieved_at"],
    )
    op.create_index(
        "ix_achievements_account_contact_time",
        "achievements",
        ["account_id", "contact_id", "achieved_at"],
    )
    op.create_index(
        "ix_achievements_unpublished",
        "achievements",
        ["recorded_at"],
        postgresql_where=sa.text("published_at IS NULL"),
    )

    op.create_table(
        "enrollments",
        sa.Column("enrollment_id", sa.Text, primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("workflow_id", sa.Text, nullable=False),
        sa.Column("contact_id", sa.Text, nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("exited_at", sa.DateTime(timezone=True)),
        sa.Column("exit_reason", sa.Text),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index(
        "ix_enrollments_account_workflow_enrolled",
        "enrollments",
        ["account_id", "workflow_id", "enrolled_at"],
    )


def downgrade() -> None:
    op.drop_table("enrollments")
    op.drop_table("achievements")
    op.drop_table("goals")
