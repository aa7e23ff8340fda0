"""Storage: users, chats and messages in SQLite (or any SQLAlchemy database).

db = open_database(sqlite_url(data_dir))  # migrates the schema to the newest revision
with db.begin() as session:  # one unit of work; commits at the end
    get_or_create_chat(session, chat_id, "private")
    get_or_create_user(session, user_id, name)
    add_message(session, chat_id=chat_id, user_id=user_id, text=text, update_id=update_id)
"""

from storage.database import Database, alembic_config, open_database, sqlite_url
from storage.models import (
    CHAT_TYPES,
    DEFAULT_TEMPERATURE,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    Base,
    Chat,
    Message,
    User,
)
from storage.repository import (
    Transcript,
    Turn,
    add_message,
    count_human_messages_since,
    count_messages,
    forget_user,
    get_or_create_chat,
    get_or_create_user,
    get_user,
    last_message_id,
    recent_turns,
    set_learning,
    set_temperature,
    training_transcripts,
)

__all__ = [
    "CHAT_TYPES",
    "DEFAULT_TEMPERATURE",
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "Base",
    "Chat",
    "Database",
    "Message",
    "Transcript",
    "Turn",
    "User",
    "add_message",
    "alembic_config",
    "count_human_messages_since",
    "count_messages",
    "forget_user",
    "get_or_create_chat",
    "get_or_create_user",
    "get_user",
    "last_message_id",
    "open_database",
    "recent_turns",
    "set_learning",
    "set_temperature",
    "sqlite_url",
    "training_transcripts",
]
