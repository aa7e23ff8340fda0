"""Every sentence the bot says about itself, in one place (both front ends use these)."""

from __future__ import annotations

INTRO = (
    "I'm charbot. Every reply I write is made up byte by byte by a small recurrent "
    "neural network, and I keep learning from the people who talk to me, so expect odd "
    "answers. Just write to me."
)

# Each command's menu entry and /help line (the table is bot.commands.COMMANDS).
HELP_MENU = "What this bot is and every command"
HELP_LINE = "/help — this message (/start shows it too)"
TEMP_MENU = "Show or set how adventurous replies are (0–2)"
TEMP_LINE = (
    "/temp — show your reply temperature; /temp 0.6 sets it: 0 = always the likeliest "
    "letter, 2 = wild (kept across chats)"
)
LEARN_MENU = "Allow or stop learning from your messages (on/off)"
LEARN_LINE = "/learn on | /learn off — whether I may learn from your messages"
FORGET_MENU = "Delete everything stored about you"
FORGET_LINE = "/forget — delete everything I stored about you (messages and settings)"
STATUS_MENU = "Model version, message counts, uptime, retraining"
STATUS_LINE = "/status — model version, message counts, uptime, retraining"
RETRAIN_MENU = "Retrain the model on the stored conversations now"
RETRAIN_LINE = "/retrain — retrain on the stored conversations now; I report the outcome"
ROLLBACK_MENU = "Make the previous model version live again"
ROLLBACK_LINE = "/rollback — make the previous model version live again"

GROUPS = "In groups I answer when you mention me or reply to one of my messages."
ADMIN_HEADER = "For admins:"

TEMP_EXAMPLE = "/temp 0.6"
TEMP_SHOW = (
    "Your temperature is {value} (0 = always the likeliest letter, 2 = wild). "
    "Change it with /temp 0.8."
)
TEMP_SET = "Temperature set to {value}."
TEMP_BAD = (
    "{shown} is not a temperature I can use. Send one number from 0 to 2, "
    "e.g. {example} (0 = always the likeliest letter, 2 = wild). Yours stays {value}."
)

LEARN_ON_NOW = "I learn from your messages (learning is on). Stop it with /learn off."
LEARN_OFF_NOW = "I don't learn from your messages (learning is off). Allow it with /learn on."
LEARN_SET_ON = "OK: I may learn from your messages again."
LEARN_SET_OFF = (
    "OK: I won't learn from your messages. I still answer you; /forget deletes what I stored."
)
LEARN_BAD = "Send /learn on or /learn off (or just /learn to see the current setting)."

FORGET_DONE = (
    "Done: I deleted everything I stored about you ({messages}), our private chat and "
    "your settings; a retraining run that was using your messages will not publish. "
    "If you write again, I start afresh, learning included (/learn off stops that)."
)
ANONYMOUS = (
    "You are writing as a channel or an anonymous admin, so I can't tell who you are. "
    "Send this command from your own account."
)

STATUS_REFUSED = "This command is for the bot's admins."
ADMIN_SENT_PRIVATELY = "I sent you the answer in our private chat."
ADMIN_PRIVATE_FAILED = (
    "Admin answers go to a private chat, and we have none yet: open a chat with me and "
    "send /{name} there."
)
RETRAIN_STARTED = (
    "Retraining started. I'll tell you how it went when it ends (usually a few minutes)."
)
RETRAIN_RUNNING = "A retraining run is already going; I'll report when it ends."
RETRAIN_UNAVAILABLE = "Retraining is not available here; try again in a moment."
ROLLBACK_NOT_LOADED = (
    "Version {live} is live in the model store now, but loading it failed (see the log): "
    "I still answer with version {served}. Check the file, then /rollback again or restart."
)
STORE_NOTICE = "The model store needed a repair at start: {}."
ROLLED_BACK = "Rolled back: now serving model version {new} (was {old})."
ROLLBACK_IMPOSSIBLE = "Cannot roll back: {reason}"
UNKNOWN_COMMAND = "I don't know that command. /help lists the ones I know."
TEXT_ONLY = "I only read text — send me a few words and I'll answer."
REPLY_FAILED = "Sorry, I couldn't think of a reply just now. Please try again in a moment."
BUSY = "I'm answering a lot of people right now. Please try again in a few seconds."


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
