"""Users' languages (their /lang choice and their Telegram app's), each group's chance
of answering messages not meant for the bot, and whether an owed reply was asked for.

Every row keeps its meaning: NULL means "no choice" (the app's language, or English)
and "only when mentioned or replied to"; replies owed before were all asked for.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("language", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("app_language", sa.String(length=16), nullable=True))
    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("reply_chance", sa.Float(), nullable=True))
    with op.batch_alter_table("pending_replies") as batch:
        batch.add_column(sa.Column("asked", sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("pending_replies") as batch:
        batch.drop_column("asked")
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("reply_chance")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("app_language")
        batch.drop_column("language")
