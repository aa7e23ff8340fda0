"""Kept message counts (per user, and the bot's per chat), the mark of a /forget in
progress, and when a user last changed what the bot may learn from them.

The counts are filled from the stored messages, one grouped pass each; from here on
every insert and delete keeps them in step. Nobody is being forgotten yet.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

users = sa.table("users", sa.column("id"), sa.column("message_count"))
chats = sa.table("chats", sa.column("id"), sa.column("bot_message_count"))
messages = sa.table(
    "messages", sa.column("chat_id"), sa.column("user_id"), sa.column("from_bot", sa.Boolean)
)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("message_count", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("forget_until_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("consent_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("chats") as batch:
        batch.add_column(
            sa.Column("bot_message_count", sa.BigInteger(), server_default="0", nullable=False)
        )
    written = (
        sa.select(messages.c.user_id, sa.func.count().label("n"))
        .where(messages.c.user_id.is_not(None))
        .group_by(messages.c.user_id)
        .subquery()
    )
    op.execute(
        users.update().where(users.c.id == written.c.user_id).values(message_count=written.c.n)
    )
    answered = (
        sa.select(messages.c.chat_id, sa.func.count().label("n"))
        .where(messages.c.from_bot.is_(True))
        .group_by(messages.c.chat_id)
        .subquery()
    )
    op.execute(
        chats.update()
        .where(chats.c.id == answered.c.chat_id)
        .values(bot_message_count=answered.c.n)
    )


def downgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("bot_message_count")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("consent_at")
        batch.drop_column("forget_until_id")
        batch.drop_column("message_count")
