"""What a test reads back from the stub: everything the bot sent, set or asked for, and waits
for it. Thread-safe; the ``await_*`` variants are for code inside a running event loop."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable

from stub_wire import Params


class _RecordList(list):
    """A list snapshot that can also be called to filter by chat: ``stub.chat_actions(42)``."""

    def __call__(self, chat_id: int | None = None) -> list[Params]:
        return [r for r in self if chat_id is None or r.get("chat_id") == chat_id]


class StubObserver:
    """The test-facing inspection and waiting methods of :class:`BotApiStub`.

    It keeps no state of its own: the attributes it uses (``_lock``, ``_cond``, ...) are set
    up in ``BotApiStub.__init__``.
    """

    # ---------------------------------------------------------------- inspection

    def sent_messages(self, chat_id: int | None = None) -> list[Params]:
        """Every accepted sendMessage: its params (text, chat_id, reply_parameters, ...) plus
        ``message_id``, ``reply_to_message_id`` (resolved), ``date`` and ``received_at``
        (``time.monotonic()`` on arrival)."""
        with self._lock:
            return [
                copy.deepcopy(r) for r in self._sent if chat_id is None or r["chat_id"] == chat_id
            ]

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        return [r["text"] for r in self.sent_messages(chat_id)]

    @property
    def chat_actions(self) -> _RecordList:
        """Every accepted sendChatAction (``chat_id``, ``action``, ``time``, and
        ``received_at``: ``time.monotonic()`` on arrival, comparable with
        :meth:`sent_messages`); call it with a chat_id to filter: ``stub.chat_actions(42)``."""
        with self._lock:
            return _RecordList(copy.deepcopy(self._actions))

    @property
    def sent_documents(self) -> _RecordList:
        """Every accepted sendDocument: ``chat_id``, ``file_name`` (as uploaded), ``mime_type``,
        ``data`` (the uploaded bytes), ``caption``, ``message_thread_id``,
        ``reply_to_message_id`` (resolved) and ``message_id``; callable like
        :attr:`chat_actions` to filter by chat."""
        with self._lock:
            return _RecordList(copy.deepcopy(self._documents))

    @property
    def callback_answers(self) -> _RecordList:
        """Every accepted answerCallbackQuery: ``callback_query_id``, ``text`` (None when not
        given), ``show_alert`` (bool), the query's ``data``, ``user_id``, ``chat_id`` and
        ``message_id``, and ``time``; callable like :attr:`chat_actions` to filter by chat."""
        with self._lock:
            return _RecordList(copy.deepcopy(self._callback_answers))

    @property
    def sent_files(self) -> _RecordList:
        """Every accepted sendPhoto: ``chat_id``, ``caption``, ``data`` (the uploaded bytes) and
        ``message_id``; callable like :attr:`chat_actions` to filter by chat."""
        with self._lock:
            return _RecordList(copy.deepcopy(self._photos))

    def calls(self, method: str) -> list[Params]:
        """Params of every request to ``method`` (case-insensitive), accepted or not."""
        with self._lock:
            return [copy.deepcopy(p) for name, p in self._calls if name == method.lower()]

    @property
    def rejected(self) -> list[Params]:
        """Every error answer except 409: ``method``, ``error_code`` (400/404/429),
        ``description`` (e.g. "Bad Request: message is too long") and ``params``."""
        with self._lock:
            return copy.deepcopy(self._rejected)

    @property
    def flood_rejections(self) -> int:
        """How many 429 Too Many Requests answers were sent."""
        with self._lock:
            return self._flood_rejections

    @property
    def errors(self) -> list[str]:
        """Tracebacks of exceptions inside the stub itself (answered 500); should stay empty."""
        with self._lock:
            return list(self._errors)

    def my_commands(
        self, scope: Params | None = None, language_code: str | None = None
    ) -> list[Params]:
        """Commands registered via setMyCommands for exactly ``scope`` (default scope when None)
        and ``language_code`` (None or "" for no language); no fallback between them."""
        key = (self._scope_key(scope), language_code or "")
        with self._lock:
            return copy.deepcopy(self._commands.get(key, []))

    def description(self, language_code: str | None = None) -> str | None:
        """The text setMyDescription last set for exactly ``language_code`` (None or "" for no
        language): "" once removed, None when never set."""
        with self._lock:
            return self._descriptions.get(("description", language_code or ""))

    def short_description(self, language_code: str | None = None) -> str | None:
        """As :meth:`description`, for setMyShortDescription."""
        with self._lock:
            return self._descriptions.get(("short_description", language_code or ""))

    @property
    def webhook(self) -> Params | None:
        """What setWebhook registered (``url``, ``secret_token``, ``allowed_updates``,
        ``drop_pending_updates``, ``max_connections``), or None when no webhook is set."""
        with self._lock:
            return copy.deepcopy(self._webhook)

    @property
    def pending_update_ids(self) -> list[int]:
        """The update_ids pushed and not confirmed yet, in order."""
        with self._lock:
            return sorted(q.update_id for q in self._queue)

    @property
    def confirmed_update_ids(self) -> list[int]:
        """The update_ids confirmed by a getUpdates offset or a 2xx answer to a webhook post, in
        order (a redelivery twice)."""
        with self._lock:
            return list(self._confirmed)

    # ---------------------------------------------------------------- waiting

    def _summary(self) -> str:
        sent = [(r["chat_id"], r["text"]) for r in self._sent]
        rejected = [(r["method"], r["description"]) for r in self._rejected]
        return (
            f"sent (chat_id, text): {sent!r}; rejected: {rejected!r}; "
            f"pending updates: {len(self._queue)}; stub errors: {self._errors!r}"
        )

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 30, what: str = "condition"
    ) -> None:
        """Block until ``predicate()`` is true (re-checked whenever the stub records something).

        Refuses to run inside a running event loop, where blocking would freeze a bot running on
        that loop: use :meth:`await_until` there.
        """
        self._refuse_in_loop("wait_*")
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; {self._summary()}"
                )

    async def await_until(
        self, predicate: Callable[[], bool], timeout: float = 30, what: str = "condition"
    ) -> None:
        """Asyncio-friendly :meth:`wait_until` (polls without blocking the loop)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if predicate():
                    return
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}; {self._summary()}"
                    )
            await asyncio.sleep(0.01)

    @staticmethod
    def _refuse_in_loop(name: str) -> None:
        """A blocking helper called inside a running event loop would freeze a bot on it."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise RuntimeError(
            f"BotApiStub.{name} blocks; inside an event loop use the await_* variants"
        )

    def _count_sent(self, chat_id: int) -> int:
        return sum(1 for r in self._sent if r["chat_id"] == chat_id)

    def wait_for_messages(self, chat_id: int, count: int, timeout: float = 30) -> list[Params]:
        """Block until at least ``count`` messages were sent to ``chat_id`` in total; returns
        all of them (as :meth:`sent_messages`). AssertionError listing what was sent on timeout."""
        self.wait_until(
            lambda: self._count_sent(chat_id) >= count,
            timeout,
            f"{count} message(s) to chat {chat_id}",
        )
        return self.sent_messages(chat_id)

    async def await_messages(self, chat_id: int, count: int, timeout: float = 30) -> list[Params]:
        """Asyncio-friendly :meth:`wait_for_messages`."""
        await self.await_until(
            lambda: self._count_sent(chat_id) >= count,
            timeout,
            f"{count} message(s) to chat {chat_id}",
        )
        return self.sent_messages(chat_id)

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 30) -> list[Params]:
        """Block until ``method`` was requested at least ``count`` times; returns their params."""

        def called() -> bool:
            return sum(1 for name, _ in self._calls if name == method.lower()) >= count

        self.wait_until(called, timeout, f"{count} call(s) to {method}")
        return self.calls(method)
