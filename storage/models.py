"""The bot's tables: who talks to it, where, and what was said.

The schema itself is owned by the Alembic migrations in `storage/migrations/`;
these classes describe it for the ORM and must stay in step with them
(tests/test_storage.py compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DEFAULT_TEMPERATURE = 0.6  # a reply temperature that is lively but still mostly readable
MIN_TEMPERATURE = 0.0  # greedy: always the most likely byte
MAX_TEMPERATURE = 2.0  # wild; beyond this the output is noise
MIN_REPLY_CHANCE = 0.0  # a group's default: answer only when mentioned or replied to
MAX_REPLY_CHANCE = 1.0  # answer every message

# Chat types we store: Telegram's four plus the local `charbot chat` terminal.
CHAT_TYPES = ("private", "group", "supergroup", "channel", "terminal")
GROUP_CHAT_TYPES = ("group", "supergroup")
LANGUAGE_CODE_CHARS = 16  # room for an IETF language tag ("pt-br", "zh-hans")
NAME_CHARS = 255  # a user's name or a chat's title (Telegram's are shorter), cut to this

# Deterministic constraint names, so later migrations (batch mode on SQLite) can
# refer to constraints by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no time zone, so naive values read from it are UTC by construction.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; pass an aware one (UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """A Telegram user and their settings."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(String(NAME_CHARS))
    temperature: Mapped[float] = mapped_column(Float, default=DEFAULT_TEMPERATURE)
    learning: Mapped[bool] = mapped_column(default=True)  # may the bot learn from their text?
    # Their /lang choice (NULL: none) and their Telegram app's language_code.
    language: Mapped[str | None] = mapped_column(String(LANGUAGE_CODE_CHARS))
    app_language: Mapped[str | None] = mapped_column(String(LANGUAGE_CODE_CHARS))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Messages they wrote, kept in step by every insert and delete (storage.repository
    # tally_turns) so the counts behind /status never scan the messages.
    message_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Set while a /forget deletes their messages (storage.forgetting): the newest message
    # id when they asked; what they wrote up to it goes, anything later stays.
    forget_until_id: Mapped[int | None] = mapped_column(BigInteger)
    # When they last turned learning on or off or asked to be forgotten (NULL: never): a
    # training run that read their text withdraws it if this changed meanwhile.
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"User(id={self.id}, name={self.name!r}, temperature={self.temperature})"


class Chat(Base):
    """A Telegram chat (ids of groups are negative) or the local terminal."""

    __tablename__ = "chats"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(16))  # one of CHAT_TYPES
    title: Mapped[str | None] = mapped_column(String(NAME_CHARS))
    # Groups: the chance of answering a message not meant for the bot; NULL = MIN_REPLY_CHANCE.
    reply_chance: Mapped[float | None] = mapped_column(Float)
    # The bot's turns in this chat, kept in step like User.message_count.
    bot_message_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    def __repr__(self) -> str:
        return f"Chat(id={self.id}, type={self.type!r}, title={self.title!r})"


class Message(Base):
    """One conversation turn: a human's message or one of the bot's replies."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_chat_id_id", "chat_id", "id"),
        # What identifies a message in Telegram: a redelivered update is stored once.
        # (Update ids are no key: they start over for a new token or after a quiet week.)
        Index(
            "uq_messages_chat_id_telegram_message_id", "chat_id", "telegram_message_id", unique=True
        ),
        # Ids only grow, even after the newest rows are deleted (/forget): training
        # remembers "everything up to message id N" and must not miss a reused id.
        # (PostgreSQL's sequences never go back; SQLite needs AUTOINCREMENT for it.)
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("chats.id"))
    # NULL = written by the bot. Deleting a user takes their messages along.
    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    from_bot: Mapped[bool]
    text: Mapped[str] = mapped_column(Text)
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)
    update_id: Mapped[int | None] = mapped_column(BigInteger)  # for the logs
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        who = "bot" if self.from_bot else f"user {self.user_id}"
        return f"Message(id={self.id}, chat_id={self.chat_id}, {who}, text={self.text[:20]!r})"


# Who started a retraining run, and how it ended ("running" until it does).
class PendingReply(Base):
    """A stored message the bot owes an answer: written with the message, before Telegram
    is told the update arrived, and deleted with the answer. What a crash leaves here is
    answered at the next start."""

    __tablename__ = "pending_replies"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    telegram_message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)  # the asker (/forget)
    context_until: Mapped[int]  # messages.id of the newest human turn the reply may read
    thread_id: Mapped[int | None] = mapped_column(BigInteger)  # forum topic, if any
    # False: nobody asked, the group's reply chance picked it (no apology if it fails).
    asked: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"PendingReply(chat_id={self.chat_id}, message={self.telegram_message_id})"


RUN_TRIGGERS = ("schedule", "admin", "cli")
RUN_STATUSES = ("running", "published", "rejected", "failed", "skipped")


class TrainingRun(Base):
    """One retraining run: what started it, what it saw, and how it ended."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))  # one of RUN_TRIGGERS
    requested_by: Mapped[int | None] = mapped_column(BigInteger)  # the admin's Telegram id
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")  # one of RUN_STATUSES
    # The newest message id when the run started: the scheduler counts new human
    # messages from here, so a restart does not lose track of the last run.
    last_message_id: Mapped[int] = mapped_column(BigInteger, default=0)
    examples: Mapped[int | None]  # conversation chunks trained on
    epochs: Mapped[int | None]
    live_version: Mapped[int | None]  # the model version the run started from
    new_version: Mapped[int | None]  # the version it published, if any
    # Held-out losses in bits per byte: live and candidate, on chat data and the base slice.
    live_chat_bits: Mapped[float | None] = mapped_column(Float)
    candidate_chat_bits: Mapped[float | None] = mapped_column(Float)
    live_base_bits: Mapped[float | None] = mapped_column(Float)
    candidate_base_bits: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)  # why it failed or was skipped/rejected
    result_json: Mapped[str | None] = mapped_column(Text)  # the full report (RunResult.to_dict)
    # Whether the outcome reached the admins; the bot reports finished runs that did not.
    reported: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def __repr__(self) -> str:
        return f"TrainingRun(id={self.id}, trigger={self.trigger!r}, status={self.status!r})"
