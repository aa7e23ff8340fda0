"""Every sentence the bot says about itself, in one place (both front ends use these).

The texts wrapped in N_ are what users read: they are the message ids of the gettext
catalogue in bot/locales/ (bot.i18n translates them; `pybabel extract` finds them by
that marker). Placeholders are str.format fields, and every translation must keep
them. The rest (notes for the operator and admins, beside logs and /status reports)
is English only.
"""

from __future__ import annotations


def N_(text: str) -> str:
    """Mark `text` for the catalogue (gettext's no-op marker); translated where used."""
    return text


# -- what the bot is -------------------------------------------------------------------

INTRO = N_(
    "I'm charbot. Every reply I write is made up byte by byte by a small recurrent "
    "neural network, and I keep learning from the people who talk to me, so expect odd "
    "answers. Just write to me."
)
# Telegram shows these on the bot's profile and before a user's first message.
DESCRIPTION = N_(
    "I'm charbot: every reply I write is made up byte by byte by a small neural network "
    "that keeps learning from the people who talk to it. Press Start and just write to "
    "me; /help lists what I can do, /privacy what I keep."
)
SHORT_DESCRIPTION = N_(
    "A chat bot whose replies a small neural network writes byte by byte, learning from its users."
)

# -- each command's menu entry and /help line (the table is bot.commands.COMMANDS) ------

HELP_MENU = N_("What this bot is and every command")
HELP_LINE = N_("/help — this message (/start shows it too)")
TEMP_MENU = N_("Show or set how adventurous replies are (0–2)")
TEMP_LINE = N_(
    "/temp — show your reply temperature, with buttons to change it; /temp 0.6 sets it: "
    "0 = always the likeliest letter, 2 = wild (kept across chats)"
)
LEARN_MENU = N_("Allow or stop learning from your messages (on/off)")
LEARN_LINE = N_("/learn on | /learn off — whether I may learn from your messages")
LANG_MENU = N_("The language of my own messages")
LANG_LINE = N_(
    "/lang — the language of my own messages; /lang de sets it, /lang auto follows your "
    "Telegram app"
)
CHANCE_MENU = N_("Groups: how often I join in unasked (0–1)")
CHANCE_LINE = N_(
    "/chance — in a group, how often I answer messages not meant for me; /chance 0.2 sets "
    "it (0 = only when mentioned or replied to, 1 = every message; group admins only)"
)
PRIVACY_MENU = N_("What I keep about you and how I learn")
PRIVACY_LINE = N_("/privacy — what I store, for how long, who can see it and how I learn")
MYDATA_MENU = N_("A file of everything I store about you")
MYDATA_LINE = N_("/mydata — a file with everything I store about you")
FORGET_MENU = N_("Delete everything stored about you")
FORGET_LINE = N_("/forget — delete everything I stored about you (messages and settings)")
STATUS_MENU = N_("Model version, message counts, uptime, retraining")
STATUS_LINE = N_("/status — model version, message counts, uptime, retraining")
RETRAIN_MENU = N_("Retrain the model on the stored conversations now")
RETRAIN_LINE = N_("/retrain — retrain on the stored conversations now; I report the outcome")
ROLLBACK_MENU = N_("Make the previous model version live again")
ROLLBACK_LINE = N_("/rollback — make the previous model version live again")

GROUPS = N_(
    "In groups I answer when you mention me or reply to one of my messages, and, as "
    "often as the group's admins allow with /chance, other messages too."
)
ADMIN_HEADER = N_("For admins:")

# -- /temp --------------------------------------------------------------------------------

TEMP_SHOW = N_(
    "Your temperature is {value} (0 = always the likeliest letter, 2 = wild). Tap a "
    "value below or send /temp 0.8."
)
TEMP_SET = N_("Temperature set to {value}.")
TEMP_BAD = N_(
    "{shown} is not a temperature I can use. Send one number from 0 to 2, e.g. /temp 0.6 "
    "(0 = always the likeliest letter, 2 = wild). Yours stays {value}."
)
TEMP_BUTTON_STALE = N_(
    "That button is out of date. Send /temp for fresh ones; your temperature stays {value}."
)

# -- /learn -------------------------------------------------------------------------------

LEARN_ON_NOW = N_("I learn from your messages (learning is on). Stop it with /learn off.")
LEARN_OFF_NOW = N_("I don't learn from your messages (learning is off). Allow it with /learn on.")
LEARN_SET_ON = N_("OK: I may learn from your messages again.")
LEARN_SET_OFF = N_(
    "OK: I won't learn from your messages. I still answer you; /forget deletes what I stored."
)
LEARN_BAD = N_("Send /learn on or /learn off (or just /learn to see the current setting).")

# -- /lang --------------------------------------------------------------------------------

LANG_SHOW_AUTO = N_(
    "I write my own messages in {language}, the language of your Telegram app. Choose "
    "another with /lang and one of: {codes}."
)
LANG_SHOW_CHOSEN = N_(
    "I write my own messages in {language}, as you chose. /lang auto follows your "
    "Telegram app again; the others: {codes}."
)
LANG_SET = N_("From now on I write my own messages in {language}.")
LANG_AUTO = N_("OK: I follow the language of your Telegram app again ({language}).")
LANG_BAD = N_("I don't write {shown}. Send /lang and one of: {codes} (or /lang auto).")

# -- /chance ------------------------------------------------------------------------------

CHANCE_SHOW = N_(
    "In this group I answer messages not meant for me with chance {value} (0 = only when "
    "mentioned or replied to, 1 = every message). Group admins change it with /chance 0.2."
)
CHANCE_SET = N_("Done: in this group I now answer messages not meant for me with chance {value}.")
CHANCE_BAD = N_(
    "{shown} is not a chance I can use. Send one number from 0 to 1, e.g. /chance 0.2 "
    "(0 = only when mentioned or replied to, 1 = every message). It stays {value}."
)
CHANCE_REFUSED = N_("Only this group's admins can change how often I speak here.")
CHANCE_PRIVATE = N_("/chance is for groups: in our private chat I answer every message.")
CHANCE_CHECK_FAILED = N_(
    "I couldn't ask Telegram whether you are an admin of this group. Please try again in a moment."
)

# -- /privacy, /mydata, /forget -----------------------------------------------------------

PRIVACY = N_(
    "What I keep: the text of every message you send me, and of every message in groups "
    "where I can read along (captions too), with the chat it was in and when; my replies; "
    "your Telegram id and name; your settings (temperature, learning, language). Photos, "
    "stickers and other files I don't keep.\n\n"
    "For how long: until you send /forget (which deletes all of it at once) or the "
    "operator deletes it; nothing expires by itself.\n\n"
    "Who can see it: the operator who runs me can read everything stored; the members of "
    "a group see what was said there anyway; other users see none of it directly.\n\n"
    "How I learn: from time to time I am retrained on the stored conversations, so what "
    "people write shapes how I talk, and my replies may echo words and phrases from "
    "them. /learn off keeps your messages out of that. A model version trained before "
    "keeps what it learnt until later retraining runs, which leave you out, replace it.\n\n"
    "Chat memory: between retraining runs I also keep a memory of short phrases people "
    "wrote recently, counted from the newest stored messages and refreshed every few "
    "minutes while I run; my replies can draw on it. A phrase only gets in once at least "
    "{users} different people have used it (one person repeating it counts once). It holds "
    "counts of phrases, not the messages themselves, and is kept with the rest of my data "
    "so it survives restarts; /learn off and /forget take your messages out of it at once.\n\n"
    "/mydata sends you a file of everything I store about you."
)
MYDATA_CAPTION = N_("Everything I store about you (messages: {count}).")
FORGET_DONE = N_(
    "Done: I deleted everything I stored about you (messages: {count}), our private chat "
    "and your settings; a retraining run that was using your messages will not publish. "
    "Model versions trained before keep what they learnt from you until the next "
    "retraining runs replace them, and those leave your messages out. If you write again, "
    "I start afresh, learning included (/learn off stops that)."
)
ANONYMOUS = N_(
    "You are writing as a channel or an anonymous admin, so I can't tell who you are. "
    "Send this command from your own account."
)

# -- admin commands -----------------------------------------------------------------------

STATUS_REFUSED = N_("This command is for the bot's admins.")
SENT_PRIVATELY = N_("I sent you the answer in our private chat.")
PRIVATE_FAILED = N_(
    "I answer this in a private chat, and we have none yet: open a chat with me and send "
    "/{name} there."
)
RETRAIN_STARTED = N_(
    "Retraining started. I'll tell you how it went when it ends (usually a few minutes)."
)
RETRAIN_RUNNING = N_("A retraining run is already going; I'll report when it ends.")
RETRAIN_UNAVAILABLE = N_("Retraining is not available here; try again in a moment.")
ROLLBACK_NOT_LOADED = N_(
    "Version {live} is live in the model store now, but loading it failed (see the log): "
    "I still answer with version {served}. Check the file, then /rollback again or restart."
)
ROLLED_BACK = N_("Rolled back: now serving model version {new} (was {old}).")
ROLLBACK_IMPOSSIBLE = N_("Cannot roll back: {reason}")

# -- conversation -------------------------------------------------------------------------

UNKNOWN_COMMAND = N_("I don't know that command. /help lists the ones I know.")
TEXT_ONLY = N_(
    "I only read text — send me a few words (or a photo or file with a caption) and I'll answer."
)
REPLY_FAILED = N_("Sorry, I couldn't think of a reply just now. Please try again in a moment.")
BUSY = N_("I'm answering a lot of people right now. Please try again in a few seconds.")

# -- for the operator and admins only (English, like the logs and /status) ---------------

STORE_NOTICE = "The model store needed a repair at start: {}."
PRIVACY_MODE = (
    "Privacy mode is on: in groups Telegram shows me only commands, mentions and replies "
    "to me, so I neither store nor learn from the rest, and /chance cannot make me join "
    "in. To change it: @BotFather → /setprivacy → Disable, then remove me from each group "
    "and add me again."
)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
