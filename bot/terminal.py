"""`charbot chat`: the same bot in the terminal, with no token.

Same storage, same commands (through bot.commands, like the Telegram handlers), one
local user who counts as an admin, in a chat of type "terminal". Reads lines from
stdin (a pipe works: one answer per line, exit at end of input).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from bot import commands, texts
from bot.conversation import Incoming, record_bot_turn, record_human_turn, telegram_text
from bot.service import Services

log = logging.getLogger(__name__)

LOCAL_USER_ID = 0  # Telegram never uses id 0, so the local user cannot clash with a real one
LOCAL_CHAT_ID = 0
CHAT_TYPE = "terminal"
PROMPT = "you> "
ANSWER = "bot> "
WELCOME = "charbot in the terminal: write a message, /help lists the commands, Ctrl-D leaves."


def respond(services: Services, line: str) -> str | None:
    """The bot's answer to one line: a command's result or a generated reply (None: blank)."""
    line = line.strip()
    if not line:
        return None
    if line.startswith("/"):
        return run_command(services, line)
    incoming = Incoming(LOCAL_CHAT_ID, CHAT_TYPE, LOCAL_USER_ID, line, user_name="terminal")
    temperature = record_human_turn(services.db, incoming)
    try:
        reply = services.replies.reply_sync(LOCAL_CHAT_ID, temperature)
    except Exception:
        log.exception("generating a reply failed")
        return texts.REPLY_FAILED
    answer = telegram_text(reply.text)
    record_bot_turn(services.db, LOCAL_CHAT_ID, answer)
    return answer


def run_command(services: Services, line: str) -> str:
    name, *args = line.split()
    name = name[1:].split("@", 1)[0].lower()  # "/Temp@charbot" -> "temp"
    db = services.db
    if name in ("start", "help"):
        return commands.help_text(admin=True)
    if name == "temp":
        return commands.temperature_command(db, LOCAL_USER_ID, args)
    if name == "learn":
        return commands.learn_command(db, LOCAL_USER_ID, args)
    if name == "forget":
        return commands.forget_command(db, LOCAL_USER_ID)
    if name == "status":
        return commands.status_text(db, services.model, services.uptime())
    return texts.UNKNOWN_COMMAND


def format_answer(answer: str) -> str:
    """The answer after the "bot> " mark; further lines are indented under it."""
    return ANSWER + answer.replace("\n", "\n" + " " * len(ANSWER))


def chat(services: Services, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Answer every line of `stdin` until end of input or Ctrl-C; returns the exit status."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty() and stdout.isatty()
    if interactive:
        print(WELCOME, file=stdout)
    try:
        while True:
            if interactive:
                try:
                    line = input(PROMPT)  # line editing and history when readline is there
                except EOFError:
                    print(file=stdout)
                    break
            else:
                line = stdin.readline()
                if not line:
                    break
            answer = respond(services, line)
            if answer is not None:
                print(format_answer(answer), file=stdout, flush=True)
    except KeyboardInterrupt:
        print(file=stdout)
    return 0
