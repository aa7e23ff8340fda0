"""The `charbot` command: run, chat, status, pretrain, eval, train, backup, restore.

Settings are loaded here, once, and passed down. This is the one module of the bot that
imports inside functions: each subcommand imports the modules it runs when it runs, as the
bot, training and evaluation load TensorFlow (seconds) while `charbot --help`,
configuration errors and `charbot status` need none of it and answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import environment
from bot.backup import BackupError, backup, restore
from bot.cli_checks import (
    CommandError,
    bind_metrics,
    bind_webhook,
    check_writable_file,
    no_run,
    not_due,
    preflight,
)
from bot.config_values import WEBHOOK_SECRET_BYTES
from bot.datadir import (
    DataDirError,
    memory_path,
    open_database_for,
    open_store,
    pretrain_dir,
    run_lock,
)
from bot.logs import configure_logging, import_tensorflow, redact
from bot.model_info import ModelInfo
from bot.reports import (
    ALREADY_RUNNING_EXIT,
    describe_run,
    memory_line,
    result_line,
    saved_memory,
    status_lines,
    status_text,
)
from bot.settings import SettingsError, load_settings
from model import ModelFileError
from model.store import StoreError
from storage import DatabaseFileError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except SettingsError as exc:
        print(f"charbot: {exc}", file=sys.stderr)
        return 2
    except (CommandError, DataDirError, DatabaseFileError, BackupError) as exc:
        print(f"charbot: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charbot",
        description="A Telegram chat bot whose replies are written byte by byte by a small "
        "recurrent network.",
        epilog="Configured by environment variables (or a .env file in the current folder; "
        "the environment wins):\n" + environment.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"charbot {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the bot on Telegram (needs TELEGRAM_BOT_TOKEN)")
    run.set_defaults(func=cmd_run)
    run.add_argument(
        "--max-batch", type=int, default=None, help="benchmarks: largest reply batch (1 = off)"
    )
    run.add_argument(
        "--no-rate-limit",
        dest="rate_limit",
        action="store_false",
        help="benchmarks: send without Telegram's flood limits (never against Telegram itself)",
    )
    sub.add_parser("chat", help="talk to the bot in the terminal (no token needed)").set_defaults(
        func=cmd_chat
    )
    sub.add_parser("status", help="print what /status shows").set_defaults(func=cmd_status)
    pretrain = sub.add_parser("pretrain", help="rebuild the base model from the corpus")
    pretrain.set_defaults(func=cmd_pretrain)
    pretrain.add_argument(
        "--out", type=Path, default=None, help="where to write it (default: the shipped base)"
    )
    pretrain.add_argument(
        "--mix-only",
        action="store_true",
        help="keep the shipped base's network and fit only its mixture again (seconds)",
    )
    saving = sub.add_parser(
        "backup",
        help="copy the database and the live model into a new folder, even while the bot runs",
    )
    saving.set_defaults(func=cmd_backup)
    saving.add_argument("path", type=Path, help="the backup folder to create")
    restoring = sub.add_parser("restore", help="start an empty data dir from a backup")
    restoring.set_defaults(func=cmd_restore)
    restoring.add_argument("path", type=Path, help="a folder `charbot backup` wrote")
    evaluate = sub.add_parser("eval", help="report how well a model does on held-out data")
    evaluate.add_argument("model_path", nargs="?", help="model file (default: the served one)")
    evaluate.set_defaults(func=cmd_eval)
    train = sub.add_parser("train", help="retrain once now, exactly as the scheduler does")
    train.set_defaults(func=cmd_train)
    train.add_argument(
        "--trigger",
        choices=["cli", "schedule", "admin"],
        default=None,
        help="what the run is reported as (default: cli; schedule with --if-due)",
    )
    train.add_argument("--requested-by", type=int, default=None, help="the admin who asked")
    train.add_argument("--json", action="store_true", help="end with the run as one JSON line")
    train.add_argument(
        "--if-due",
        action="store_true",
        help="only when the schedule would start one (enough new messages, no failure "
        "backoff, no run going); else exit 0 (for a timer on a trainer host)",
    )
    return parser


# -- subcommands ----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings()
    token = settings.require_token()
    if settings.webhook_url is not None and settings.webhook_secret is None:
        # A new one each start (setWebhook registers it), made here so the log hides it too.
        new_secret = secrets.token_urlsafe(WEBHOOK_SECRET_BYTES)
        settings = dataclasses.replace(settings, webhook_secret=new_secret)
    hidden = [token, settings.webhook_secret or ""]
    configure_logging(logging.INFO, settings.log_format, secrets=hidden)
    preflight(settings)
    metrics_server = bind_metrics(settings)
    webhook_socket = bind_webhook(settings)
    import_tensorflow()
    from telegram.error import InvalidToken, NetworkError

    from bot.app import run

    try:
        run(
            settings,
            max_batch=args.max_batch,
            rate_limit=args.rate_limit,
            metrics_server=metrics_server,
            webhook_socket=webhook_socket,
        )
    except (ModelFileError, StoreError) as exc:
        raise CommandError(model_hint(exc)) from None
    except InvalidToken:
        raise CommandError(
            "Telegram refused TELEGRAM_BOT_TOKEN (check it with @BotFather)"
        ) from None
    except NetworkError as exc:
        detail = redact(str(exc), [token])  # httpx errors may quote the URL
        raise CommandError(f"could not reach the Telegram Bot API: {detail}") from None
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(logging.WARNING, settings.log_format)
    preflight(settings)
    import_tensorflow()
    from bot.services import open_services
    from bot.terminal import chat

    try:
        services = open_services(settings)
    except (ModelFileError, StoreError) as exc:
        raise CommandError(model_hint(exc)) from None
    with contextlib.suppress(AttributeError):  # undecodable input never stops the chat
        sys.stdin.reconfigure(errors="replace")
    try:
        return chat(services)
    finally:
        services.close()


def cmd_status(args: argparse.Namespace) -> int:
    """What /status shows, without TensorFlow: the model file is read, not loaded."""
    settings = load_settings()
    configure_logging(logging.WARNING, settings.log_format)
    db = open_database_for(settings)
    try:
        store = open_store(settings, repair=False)
        version, model = store.load_live()
    except (ModelFileError, StoreError) as exc:
        db.dispose()
        raise CommandError(model_hint(exc)) from None
    try:
        holder = run_lock(settings).holder()  # None: no run going
        extra = status_lines(settings, db, store, running=holder is not None, holder=holder)
        extra.append(memory_line(saved_memory(memory_path(settings)), settings))
        info = ModelInfo.of_version(store, version, model)
        print(status_text(db, info, uptime=None, extra=extra))
    finally:
        db.dispose()
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.out is not None:
        check_writable_file(args.out.resolve())
    configure_logging(logging.INFO, settings.log_format)
    import_tensorflow()
    from model.pretrain import pretrain, refit_mix

    out = {} if args.out is None else {"out_path": args.out}
    if args.mix_only:
        refit_mix(**out)
    else:
        pretrain(log_dir=pretrain_dir(settings), **out)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(logging.WARNING, settings.log_format)
    version = backup(settings, args.path.resolve())
    print(f"backed up the database and model version {version} to {args.path}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(logging.WARNING, settings.log_format)
    version = restore(settings, args.path.resolve())
    print(f"restored {args.path} into {settings.data_dir} (model version {version} live)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(logging.INFO, settings.log_format)
    import_tensorflow()
    from model.evaluate import main_report

    if args.model_path:
        path = args.model_path
    else:
        store = open_store(settings)
        path = store.model_path(store.live_version())
    main_report(path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """One retraining run in this process, at low priority, as the scheduler starts it."""
    settings = load_settings()
    configure_logging(logging.INFO, settings.log_format)
    with contextlib.suppress(OSError):
        os.nice(10)  # the bot answering on the same cores comes first
    # A timer's run stands for the bot's schedule, and is reported as one.
    trigger = args.trigger or ("schedule" if args.if_due else "cli")
    db = open_database_for(settings)
    try:
        # Before TensorFlow loads: a timer that finds nothing due costs a second.
        if args.if_due and (wait := not_due(settings, db)) is not None:
            return no_run(wait, args.json)
        import_tensorflow()
        from bot.train_job import AlreadyRunning, train_once

        try:
            run = train_once(
                settings, db, trigger=trigger, requested_by=args.requested_by, report=print
            )
        except AlreadyRunning as exc:
            if args.if_due:  # a timer's run finds one going: nothing to do now
                return no_run(str(exc), args.json)
            print(f"charbot: {exc}", file=sys.stderr)
            return ALREADY_RUNNING_EXIT
    finally:
        db.dispose()
    print(describe_run(run))
    if args.json:
        print(result_line(run))
    return 0 if run.status != "failed" else 1


# -- helpers ----------------------------------------------------------------------------


def package_version() -> str:
    try:
        return importlib.metadata.version("charbot")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


def model_hint(exc: Exception) -> str:
    return f"{exc} (build the base model with `charbot pretrain`, or set CHARBOT_MODEL_PATH)"


if __name__ == "__main__":
    sys.exit(main())
