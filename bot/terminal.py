"""`charbot chat`: the same bot in the terminal, with no token.

Same storage, same command table (bot.commands: every command /help lists, the admins'
included), the same live model and reply service, one local user who counts as an
admin, in a chat of type "terminal". Reads lines from stdin (a pipe works: one answer
per line; at end of input a retraining run still going is waited for, then it exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
import termios
import threading
from pathlib import Path
from typing import TextIO

from bot import commands, texts
from bot.conversation import Incoming, record_and_read, record_bot_turn, telegram_text
from bot.i18n import gettext
from bot.preferences import user_language
from bot.retrainer import Retrainer
from bot.services import Services

log = logging.getLogger(__name__)

LOCAL_USER_ID = 0  # Telegram never uses id 0, so the local user cannot clash with a real one
LOCAL_CHAT_ID = 0
CHAT_TYPE = "terminal"
PROMPT = "you> "
ANSWER = "bot> "
WELCOME = "charbot in the terminal: write a message, /help lists the commands, Ctrl-D leaves."
WAITING = "(waiting for the retraining run to end; Ctrl-C stops it)"


async def respond(services: Services, line: str) -> str | None:
    """The bot's answer to one line: a command's result or a generated reply (None: blank)."""
    line = line.strip()
    if not line:
        return None
    if line.startswith("/"):
        return await run_command(services, line)
    incoming = Incoming(LOCAL_CHAT_ID, CHAT_TYPE, LOCAL_USER_ID, line, user_name="terminal")
    temperature, turns = await asyncio.to_thread(
        record_and_read, services.db, incoming, services.live.max_prompt_bytes
    )
    try:
        reply = await services.live.reply(turns, temperature)
    except Exception:
        log.exception("generating a reply failed")
        language = await asyncio.to_thread(user_language, services.db, LOCAL_USER_ID, None)
        return gettext(texts.REPLY_FAILED, language)
    answer = telegram_text(reply.text)
    await asyncio.to_thread(record_bot_turn, services.db, LOCAL_CHAT_ID, answer)
    return answer


async def run_command(services: Services, line: str) -> str:
    name, *args = line.split()
    name = name[1:].split("@", 1)[0].lower()  # "/Temp@charbot" -> "temp"
    command = commands.find(name)
    language = await asyncio.to_thread(user_language, services.db, LOCAL_USER_ID, None)
    if command is None:
        return gettext(texts.UNKNOWN_COMMAND, language)
    request = commands.Request(
        services,
        LOCAL_USER_ID,
        args,
        admin=True,
        language=language,
        chat_id=LOCAL_CHAT_ID,
        chat_type=CHAT_TYPE,
    )
    answer = await commands.answer(command, request)
    parts = [answer.text]
    if answer.buttons:  # no buttons to tap here: the values they would send
        parts.append("  ".join(f"[{label}]" for label, _ in answer.buttons))
    if answer.document is not None:  # a file in Telegram; its content here
        parts.append(answer.document[1].decode())
    return "\n".join(parts)


def format_answer(answer: str) -> str:
    """The answer after the "bot> " mark; further lines are indented under it."""
    return ANSWER + answer.replace("\n", "\n" + " " * len(ANSWER))


def chat(services: Services, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Answer every line of `stdin` until end of input or Ctrl-C; returns the exit status."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    tty = _tty_state(stdin)
    try:
        asyncio.run(_chat(services, stdin, stdout))
    except KeyboardInterrupt:
        print(file=stdout)
    finally:
        if tty is not None:  # readline reads in a thread: Ctrl-C may leave the tty raw
            termios.tcsetattr(stdin, termios.TCSADRAIN, tty)
    return 0


def _tty_state(stdin: TextIO) -> list | None:
    try:
        return termios.tcgetattr(stdin) if stdin.isatty() else None
    except (termios.error, ValueError, io.UnsupportedOperation):
        return None


async def _chat(services: Services, stdin: TextIO, stdout: TextIO) -> None:
    interactive = stdin.isatty() and stdout.isatty()
    if interactive:
        print(WELCOME, file=stdout)

    async def notify(_admin: int | None, text: str, plot: Path | None) -> None:
        if plot is not None:
            text += f"\n(loss plot: {plot})"
        print(format_answer(text), file=stdout, flush=True)

    retrainer = Retrainer(services.settings, services.db, services.live, notify)
    services.retrainer = retrainer
    for notice in services.live.store.notices:
        print(format_answer(texts.STORE_NOTICE.format(notice)), file=stdout, flush=True)
    for notice in services.memory.notices if services.memory is not None else ():
        print(format_answer(notice), file=stdout, flush=True)
    await asyncio.to_thread(retrainer.close_stale_runs)
    await services.live.start()
    if services.memory is not None:
        services.memory.start()
    answered = threading.Event()  # the next prompt waits for the answer to the last line
    lines = _lines(stdin, stdout, interactive, answered)
    try:
        while (line := await lines.get()) is not None:
            answer = await respond(services, line)
            if answer is not None:
                print(format_answer(answer), file=stdout, flush=True)
            answered.set()
        if retrainer.running_here():
            print(WAITING, file=stdout, flush=True)
            await retrainer.wait()
    finally:
        await retrainer.stop()  # Ctrl-C: the run is stopped, and recorded so
        await asyncio.to_thread(retrainer.close_stale_runs)
        if services.memory is not None:
            await services.memory.stop()
        await services.live.stop()


def _lines(
    stdin: TextIO, stdout: TextIO, interactive: bool, answered: threading.Event
) -> asyncio.Queue[str | None]:
    """Lines of `stdin`, each read once the last one is `answered`, then None. A daemon
    thread reads them, so a pending read never keeps the process from exiting (Ctrl-C)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def put(line: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the chat has ended
            loop.call_soon_threadsafe(queue.put_nowait, line)

    def read() -> None:
        try:
            while True:
                if interactive:
                    try:
                        line = input(PROMPT)  # line editing and history with readline
                    except EOFError:
                        print(file=stdout)
                        break
                else:
                    line = stdin.readline()
                    if not line:
                        break
                put(line)
                answered.wait()
                answered.clear()
        finally:
            put(None)

    threading.Thread(target=read, name="terminal-input", daemon=True).start()
    return queue
