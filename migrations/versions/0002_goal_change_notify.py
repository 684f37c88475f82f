"""Notify listeners on channel goalworker_goals whenever the goals table changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One notification per statement, not per row: a bulk load of goals wakes workers once.
    op.execute(
        """
        CREATE FUNCTION goalworker_notify_goals_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('goalworker_goals', TG_OP);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER goals_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON goals
        FOR EACH STATEMENT EXECUTE FUNCTION goalworker_notify_goals_changed()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER goals_changed ON goals")
    op.execute("DROP FUNCTION goalworker_notify_goals_changed()")
