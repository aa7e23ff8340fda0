"""The Bot API methods about the bot itself and its groups' members: getMe, setMyCommands,
setMyDescription, setMyShortDescription, getMyDescription, getMyShortDescription and
getChatMember. The rules they follow are listed in :mod:`telegram_stub`'s docstring."""

from __future__ import annotations

import copy
import json
import re

from stub_wire import Params, bad

MAX_DESCRIPTION_LENGTH = 512
MAX_SHORT_DESCRIPTION_LENGTH = 120


def _language_code(params: Params) -> str:
    """The ``language_code`` parameter: "" or two lowercase letters (ISO 639-1)."""
    code = params.get("language_code")
    code = "" if code is None else str(code)
    if code and not re.fullmatch(r"[a-z]{2}", code):
        raise bad("invalid language code specified")
    return code


class BotMethods:
    """The bot's own settings and its view of group members, for :class:`BotApiStub`.

    It keeps no state of its own: the attributes it uses (``_lock``, ``_cond``, ...) are set
    up in ``BotApiStub.__init__``.
    """

    def _get_me(self, params: Params) -> Params:
        return {
            **copy.deepcopy(self.bot_user),
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
        }

    def _set_my_commands(self, params: Params) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise bad("commands must be a list")
        if len(commands) > 100:
            raise bad("too many commands specified")
        for command in commands:
            if not isinstance(command, dict):
                raise bad("BOT_COMMAND_INVALID")
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", "")).lstrip("/")):
                raise bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
                raise bad("BOT_COMMAND_DESCRIPTION_INVALID")
        key = (self._scope_key(params.get("scope")), _language_code(params))
        with self._lock:
            self._commands[key] = [
                {"command": str(c["command"]).lstrip("/"), "description": str(c["description"])}
                for c in commands
            ]
        return True

    @staticmethod
    def _scope_key(scope: Params | None) -> str:
        return json.dumps(scope or {"type": "default"}, sort_keys=True)

    def _set_text(self, params: Params, field: str, limit: int) -> bool:
        text = params.get(field)
        text = "" if text is None else str(text)
        language = _language_code(params)
        if len(text) > limit:
            raise bad(f"{field.replace('_', ' ')} is too long")
        with self._lock:
            self._descriptions[(field, language)] = text
        return True

    def _get_text(self, params: Params, field: str) -> Params:
        language = _language_code(params)
        with self._lock:
            text = self._descriptions.get((field, language)) or ""
            if not text:  # nothing dedicated to this language: the text for all the others
                text = self._descriptions.get((field, ""), "")
        return {field: text}

    def _set_my_description(self, params: Params) -> bool:
        return self._set_text(params, "description", MAX_DESCRIPTION_LENGTH)

    def _set_my_short_description(self, params: Params) -> bool:
        return self._set_text(params, "short_description", MAX_SHORT_DESCRIPTION_LENGTH)

    def _get_my_description(self, params: Params) -> Params:
        return self._get_text(params, "description")

    def _get_my_short_description(self, params: Params) -> Params:
        return self._get_text(params, "short_description")

    def _get_chat_member(self, params: Params) -> Params:
        chat_id, user_id = params.get("chat_id"), params.get("user_id")
        if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
            raise bad("invalid user_id specified")
        with self._lock:
            chat = self._chats.get(chat_id) if isinstance(chat_id, int) else None
            if chat is None or chat.get("type") == "private":
                raise bad("chat not found")
            admins, creator = self._admins.get(chat_id, (set(), None))
        user = self._user(user_id)
        if user_id == creator:
            return {"status": "creator", "user": user, "is_anonymous": False}
        if user_id not in admins:
            return {"status": "member", "user": user}
        rights = dict.fromkeys(
            [
                "can_manage_chat",
                "can_delete_messages",
                "can_manage_video_chats",
                "can_restrict_members",
                "can_change_info",
                "can_invite_users",
                "can_pin_messages",
            ],
            True,
        )
        rights |= dict.fromkeys(
            ["can_promote_members", "can_post_stories", "can_edit_stories", "can_delete_stories"],
            False,
        )
        if chat.get("type") == "supergroup":
            rights["can_manage_topics"] = False
        return {
            "status": "administrator",
            "user": user,
            "can_be_edited": False,  # only who promoted an admin can edit them
            "is_anonymous": False,
            **rights,
        }
