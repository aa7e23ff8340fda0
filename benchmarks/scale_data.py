"""Data dirs for bench_scale: N stored messages of chats with the bot, the newest in a new style.

Chats: a private chat per user (Telegram gives it the user's id) and groups of 5 to 40
members (negative ids); how busy a chat is follows a Zipf-like law, so turns of many
chats interleave. Each chat talks one language (English, Spanish, German or Russian):
human messages are 20-200 bytes of that language's common words, and the bot answers
with chance BOT_REPLY_CHANCE, so about 45% of the turns are the bot's. The newest
messages, STYLE_SHARE of all and at least STYLE_MIN of them (so at least ~600 human
ones), have their human turns in bench_retrain's pirate style. Its lines are a subject,
a verb and an ending; the (subject, verb) pairs in `probe_pairs` are never stored, so
`probe_lines` scores the style on lines no run has seen.

Rows go in through SQLAlchemy core bulk inserts, BATCH_ROWS a transaction, into the
schema storage.open_database migrates to; kept counters (users.message_count,
chats.bot_message_count), where the schema has them, are set by one UPDATE each.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import time
from pathlib import Path

from bench_retrain import ENDINGS, SUBJECTS, VERBS, pirate
from sqlalchemy import func, insert, select, update

from bot.datadir import open_store
from bot.settings import Settings
from storage import Chat, Message, User, open_database, sqlite_url

BATCH_ROWS = 10_000  # rows per INSERT transaction
STYLE_SHARE = 0.02  # of all messages, the newest, in the pirate style
STYLE_MIN = 1200  # messages at least (~55% human: ~660 human lines in the style)
BOT_REPLY_CHANCE = {"private": 0.9, "group": 0.6}  # -> ~45% of turns are the bot's
SPAN = dt.timedelta(days=180)  # the history runs up to an hour ago
BUILT_FILE = "built.json"  # the data's description, written last: a cached build is whole
LANGUAGES = {  # name: (share of chats, common words)
    "en": (
        0.7,
        "the be to of and a in that have I it for not on with he as you do at this but his "
        "by from they we say her she or an will my one all would there their what so up out "
        "if about who get which go me when make can like time no just him know take people "
        "into year your good some could them see other than then now look only come its over "
        "think also back after use two how our work first well way even new want because any "
        "these give day most us is are was were had been did said went got made know really "
        "thanks today tomorrow weekend movie music game coffee lunch dinner home city friend",
    ),
    "es": (
        0.12,
        "el la de que y a en un ser se no haber por con su para como estar tener le lo todo "
        "pero más hacer o poder decir este ir otro ese si me ya ver porque dar cuando muy sin "
        "vez mucho saber qué sobre mi alguno mismo yo también hasta año dos querer entre así",
    ),
    "de": (
        0.1,
        "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als "
        "auch es an werden aus er hat dass sie nach wird bei einer um am sind noch wie einem "
        "über einen so zum war haben nur oder aber vor zur bis mehr durch man heute morgen",
    ),
    "ru": (
        0.08,
        "и в не на я быть он с что а по это она этот к но они мы как из у который то за "
        "свой весь год от так о для ты же все тот мочь вы человек такой его сказать только "
        "или ещё бы себя один как уже до время если сам когда другой вот говорить наш мой",
    ),
}


def users_for(messages: int) -> int:
    """Several hundred users: more on a bigger history."""
    return min(300 + messages // 5000, 900)


def probe_pairs(seed: int = 11) -> set[tuple[str, str]]:
    """One (subject, verb) pair per subject that no stored line uses: 35 unseen lines."""
    rng = random.Random(seed)
    return {(subject, rng.choice(VERBS)) for subject in SUBJECTS}


def probe_lines(n: int = 200, seed: int = 12) -> list[str]:
    """`n` pirate lines made only of the never-stored pairs (so repeats among them)."""
    rng = random.Random(seed)
    pairs = sorted(probe_pairs())
    return [
        f"{s.capitalize()} {v}, {rng.choice(ENDINGS)}"
        for s, v in (rng.choice(pairs) for _ in range(n))
    ]


def stored_pirate(rng: random.Random, unseen: set[str]) -> str:
    while True:
        line = pirate(rng)
        if line.split(",")[0] not in unseen:
            return line


def sentence(rng: random.Random, words: list[str], byte_width: int) -> str:
    """20-200 bytes of `words` (skewed short), as a sentence."""
    target = 20 + int(180 * rng.random() ** 2)
    k = max(2, target // byte_width)
    text = " ".join(rng.choices(words, k=k))
    return text[:1].upper() + text[1:] + rng.choice(".?!.")


def build(data_dir: Path, messages: int, seed: int = 7) -> dict:
    """Build a data dir holding `messages` messages; returns (and saves) its description."""
    start = time.monotonic()
    rng = random.Random(seed)
    data_dir.mkdir(parents=True)
    db = open_database(sqlite_url(data_dir))  # the real, migrated schema
    n_users = users_for(messages)
    user_ids = list(range(10_001, 10_001 + n_users))
    names = list(LANGUAGES)
    shares = [share for share, _ in LANGUAGES.values()]
    vocab = {name: words.split() for name, (_, words) in LANGUAGES.items()}
    width = {name: 1 + len(" ".join(w).encode()) // len(w) for name, w in vocab.items()}
    # chats: (id, kind, language, members)
    chats = [(u, "private", rng.choices(names, shares)[0], [u]) for u in user_ids]
    for g in range(n_users // 8):
        members = rng.sample(user_ids, rng.randint(5, 40))
        chats.append((-1_000_000 - g, "group", rng.choices(names, shares)[0], members))
    rng.shuffle(chats)
    busy = list(itertools.accumulate(1 / (rank + 1) ** 0.8 for rank in range(len(chats))))
    first = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1) - SPAN
    with db.begin() as session:
        users = [{"id": u, "name": f"user {u}", "created_at": first} for u in user_ids]
        session.execute(insert(User.__table__), users)
        titles = {c: None if k == "private" else f"group {-c}" for c, k, _, _ in chats}
        rows = [{"id": c, "type": k, "title": titles[c]} for c, k, _, _ in chats]
        session.execute(insert(Chat.__table__), rows)

    unseen = {f"{s.capitalize()} {v}" for s, v in probe_pairs()}
    style_from = messages - max(int(STYLE_SHARE * messages), STYLE_MIN)
    step = SPAN / messages
    tg_ids: dict[int, int] = {}
    counts = {"human": 0, "bot": 0, "style_human": 0, "text_bytes": 0}
    batch: list[dict] = []

    def add(chat_id: int, user_id: int | None, text: str) -> None:
        tg_ids[chat_id] = tg_ids.get(chat_id, 0) + 1
        n = counts["human"] + counts["bot"]
        batch.append(
            {
                "chat_id": chat_id,
                "user_id": user_id,
                "from_bot": user_id is None,
                "text": text,
                "telegram_message_id": tg_ids[chat_id],
                "update_id": None if user_id is None else 500_000_000 + n,
                "created_at": first + n * step,
            }
        )
        counts["bot" if user_id is None else "human"] += 1
        counts["text_bytes"] += len(text.encode())
        if len(batch) >= BATCH_ROWS:
            flush()

    def flush() -> None:
        with db.begin() as session:
            session.execute(insert(Message.__table__), batch)
        batch.clear()

    while counts["human"] + counts["bot"] < messages:
        chat_id, kind, language, members = rng.choices(chats, cum_weights=busy)[0]
        if counts["human"] + counts["bot"] >= style_from:
            add(chat_id, rng.choice(members), stored_pirate(rng, unseen))
            counts["style_human"] += 1
        else:
            add(chat_id, rng.choice(members), sentence(rng, vocab[language], width[language]))
        if counts["human"] + counts["bot"] < messages and rng.random() < BOT_REPLY_CHANCE[kind]:
            add(chat_id, None, sentence(rng, vocab[language], width[language]))
    if batch:
        flush()
    with db.begin() as session:
        fix_counters(session)
    db.dispose()
    open_store(Settings(data_dir=data_dir))  # the shipped base model as version 1
    built = {
        "messages": messages,
        **counts,
        "users": n_users,
        "chats": len(chats),
        "groups": n_users // 8,
        "seconds": time.monotonic() - start,
    }
    (data_dir / BUILT_FILE).write_text(json.dumps(built))
    return built


def fix_counters(session) -> None:
    """Set the kept counters the bulk inserts bypassed, where the schema has them."""
    users, chats, msgs = User.__table__, Chat.__table__, Message.__table__
    if "message_count" in users.c:
        mine = select(func.count()).where(msgs.c.user_id == users.c.id).scalar_subquery()
        session.execute(update(users).values(message_count=mine))
    if "bot_message_count" in chats.c:
        bots = (
            select(func.count())
            .where(msgs.c.chat_id == chats.c.id, msgs.c.from_bot.is_(True))
            .scalar_subquery()
        )
        session.execute(update(chats).values(bot_message_count=bots))


def load_built(data_dir: Path) -> dict | None:
    """The description of a whole cached build in `data_dir`, or None."""
    path = data_dir / BUILT_FILE
    return json.loads(path.read_text()) if path.is_file() else None
