"""Storage: users, chats and messages in SQLite or PostgreSQL.

db = open_database(sqlite_url(data_dir))  # migrates the schema to the newest revision
with db.begin() as session:  # one unit of work; commits at the end
    get_or_create_chat(session, chat_id, "private")
    get_or_create_user(session, user_id, name)
    add_message(session, chat_id=chat_id, user_id=user_id, text=text, update_id=update_id)

Retraining runs are recorded with start_run / finish_run (storage.runs).
"""

from storage.counts import (
    count_human_messages_since,
    count_messages,
    count_trainable_messages,
)
from storage.database import (
    DATABASE_FILE,
    Database,
    DatabaseFileError,
    alembic_config,
    normalize_url,
    open_database,
    sqlite_url,
)
from storage.forgetting import (
    finish_forget,
    finish_pending_forgets,
    forget_user,
    request_forget,
)
from storage.memory_window import memory_window
from storage.models import (
    CHAT_TYPES,
    DEFAULT_TEMPERATURE,
    GROUP_CHAT_TYPES,
    MAX_REPLY_CHANCE,
    MAX_TEMPERATURE,
    MIN_REPLY_CHANCE,
    MIN_TEMPERATURE,
    RUN_STATUSES,
    RUN_TRIGGERS,
    Base,
    Chat,
    Message,
    PendingReply,
    TrainingRun,
    User,
)
from storage.owed import (
    add_pending_reply,
    delete_pending_reply,
    get_pending_reply,
    pending_replies,
    unasked_owed,
)
from storage.personal import personal_data, reply_chance, set_language, set_reply_chance
from storage.repository import (
    Transcript,
    add_message,
    get_chat,
    get_or_create_chat,
    get_or_create_user,
    get_user,
    last_message_id,
    recent_turns,
    set_learning,
    set_temperature,
    stored_text,
    training_transcripts,
)
from storage.runs import (
    FINAL_STATUSES,
    close_stale_runs,
    finish_run,
    get_run,
    last_finished_run,
    last_run,
    mark_reported,
    recent_runs,
    run_result,
    running_run,
    start_run,
    unreported_runs,
)
from storage.training_data import TrainingSample, read_training_sample, withdrawn_users

__all__ = [
    "CHAT_TYPES",
    "DATABASE_FILE",
    "DEFAULT_TEMPERATURE",
    "FINAL_STATUSES",
    "GROUP_CHAT_TYPES",
    "MAX_REPLY_CHANCE",
    "MAX_TEMPERATURE",
    "MIN_REPLY_CHANCE",
    "MIN_TEMPERATURE",
    "RUN_STATUSES",
    "RUN_TRIGGERS",
    "Base",
    "Chat",
    "Database",
    "DatabaseFileError",
    "Message",
    "PendingReply",
    "TrainingRun",
    "TrainingSample",
    "Transcript",
    "User",
    "add_message",
    "add_pending_reply",
    "alembic_config",
    "close_stale_runs",
    "count_human_messages_since",
    "count_messages",
    "count_trainable_messages",
    "delete_pending_reply",
    "finish_forget",
    "finish_pending_forgets",
    "finish_run",
    "forget_user",
    "get_chat",
    "get_or_create_chat",
    "get_or_create_user",
    "get_pending_reply",
    "get_run",
    "get_user",
    "last_finished_run",
    "last_message_id",
    "last_run",
    "mark_reported",
    "memory_window",
    "normalize_url",
    "open_database",
    "pending_replies",
    "personal_data",
    "read_training_sample",
    "recent_runs",
    "recent_turns",
    "reply_chance",
    "request_forget",
    "run_result",
    "running_run",
    "set_language",
    "set_learning",
    "set_reply_chance",
    "set_temperature",
    "sqlite_url",
    "start_run",
    "stored_text",
    "training_transcripts",
    "unasked_owed",
    "unreported_runs",
    "withdrawn_users",
]
