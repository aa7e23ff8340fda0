"""A message is identified by (chat id, Telegram message id), not by its update id; and
the replies the bot owes are kept until they are sent.

Telegram's update ids start over for a new token on the same data dir and after a week
without updates, so a unique update id dropped new messages as "redelivered". Rows that
share a (chat, message id) pair, which older versions could store, keep their text: all
but the first lose the message id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sequence = _message_sequence()
    op.execute(
        "UPDATE messages SET telegram_message_id = NULL WHERE telegram_message_id IS NOT NULL "
        "AND id NOT IN (SELECT MIN(id) FROM messages WHERE telegram_message_id IS NOT NULL "
        "GROUP BY chat_id, telegram_message_id)"
    )
    # SQLite rebuilds the table: it must stay AUTOINCREMENT, with its sequence (ids are
    # never reused, not even those of deleted newest rows).
    with op.batch_alter_table("messages", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint("uq_messages_update_id", type_="unique")
        batch.alter_column("telegram_message_id", type_=sa.BigInteger(), existing_nullable=True)
        batch.create_index(
            "uq_messages_chat_id_telegram_message_id",
            ["chat_id", "telegram_message_id"],
            unique=True,
        )
    _restore_message_sequence(sequence)
    op.create_table(
        "pending_replies",
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("telegram_message_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("context_until", sa.Integer(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", "telegram_message_id", name=op.f("pk_pending_replies")),
    )
    op.create_index(
        op.f("ix_pending_replies_user_id"), "pending_replies", ["user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_replies_user_id"), table_name="pending_replies")
    op.drop_table("pending_replies")
    sequence = _message_sequence()
    with op.batch_alter_table("messages", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_index("uq_messages_chat_id_telegram_message_id")
        batch.alter_column("telegram_message_id", type_=sa.Integer(), existing_nullable=True)
        batch.create_unique_constraint("uq_messages_update_id", ["update_id"])
    _restore_message_sequence(sequence)


def _message_sequence() -> int | None:
    """SQLite's AUTOINCREMENT counter of messages, which a table rebuild would lose.

    None elsewhere: PostgreSQL alters the table in place, and its id sequence (which
    never goes back) is untouched.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return None
    return bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'messages'")).scalar()


def _restore_message_sequence(sequence: int | None) -> None:
    if sequence is None:
        return
    bind = op.get_bind()
    bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'messages'"))
    bind.execute(
        sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', :seq)"),
        {"seq": max(sequence, bind.execute(sa.text("SELECT MAX(id) FROM messages")).scalar() or 0)},
    )
