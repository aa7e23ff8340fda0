"""Storage: users, chats and messages in SQLite (or any SQLAlchemy database).

db = open_database(sqlite_url(data_dir))  # migrates the schema to the newest revision
with db.begin() as session:  # one unit of work; commits at the end
    get_or_create_chat(session, chat_id, "private")
    get_or_create_user(session, user_id, name)
    add_message(session, chat_id=chat_id, user_id=user_id, text=text, update_id=update_id)

Retraining runs are recorded with start_run / finish_run (storage.runs).
"""

from storage.database import Database, alembic_config, open_database, sqlite_url
from storage.models import (
    CHAT_TYPES,
    DEFAULT_TEMPERATURE,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    RUN_STATUSES,
    RUN_TRIGGERS,
    Base,
    Chat,
    Message,
    TrainingRun,
    User,
)
from storage.repository import (
    Transcript,
    add_message,
    count_human_messages_since,
    count_messages,
    count_trainable_messages,
    forget_user,
    get_or_create_chat,
    get_or_create_user,
    get_user,
    last_message_id,
    learning_user_ids,
    recent_turns,
    set_learning,
    set_temperature,
    training_transcripts,
)
from storage.runs import (
    FINAL_STATUSES,
    finish_run,
    get_run,
    last_finished_run,
    last_run,
    mark_reported,
    mark_stale_runs_failed,
    recent_runs,
    run_result,
    running_run,
    start_run,
    unreported_runs,
)

__all__ = [
    "CHAT_TYPES",
    "DEFAULT_TEMPERATURE",
    "FINAL_STATUSES",
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "RUN_STATUSES",
    "RUN_TRIGGERS",
    "Base",
    "Chat",
    "Database",
    "Message",
    "TrainingRun",
    "Transcript",
    "User",
    "add_message",
    "alembic_config",
    "count_human_messages_since",
    "count_messages",
    "count_trainable_messages",
    "finish_run",
    "forget_user",
    "get_or_create_chat",
    "get_or_create_user",
    "get_run",
    "get_user",
    "last_finished_run",
    "last_message_id",
    "last_run",
    "learning_user_ids",
    "mark_reported",
    "mark_stale_runs_failed",
    "open_database",
    "recent_runs",
    "recent_turns",
    "run_result",
    "running_run",
    "set_learning",
    "set_temperature",
    "sqlite_url",
    "start_run",
    "training_transcripts",
    "unreported_runs",
]
