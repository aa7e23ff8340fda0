"""Training runs remember whether their outcome reached the admins.

A run can end while no bot is there to tell anyone (the bot restarted or was killed
while its child trained, or an operator ran `charbot train`); the bot reports such runs
when it next looks. Runs from before this revision count as reported.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.add_column(
            sa.Column("reported", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE training_runs SET reported = TRUE WHERE status != 'running'")


def downgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_column("reported")
