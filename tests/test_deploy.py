"""The Dockerfile, compose.yaml and the systemd units start the bot the way it expects.

Without Docker or systemd, what these files give the bot is checked through the bot
itself: their settings go through `load_settings`, their commands through the `charbot`
argument parser, and the image's health check runs against the bot's /healthz server.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values
from packaging.requirements import Requirement
from sqlalchemy.engine import make_url

from bot import cli, environment
from bot.metrics import Metrics, MetricsServer
from bot.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE = REPO_ROOT / "compose.yaml"
DEPLOY = REPO_ROOT / "deploy"
ENV_EXAMPLE = DEPLOY / "charbot.env.example"  # stands for compose's .env and /etc/charbot/env
KNOWN = {name for name, _ in environment.VARIABLES}
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def for_the_bot(env: dict[str, str]) -> dict[str, str]:
    """The variables of `env` that are charbot's to read (all its names are asserted known)."""
    ours = {k: v for k, v in env.items() if k.startswith("CHARBOT_") or k == "TELEGRAM_BOT_TOKEN"}
    assert set(ours) <= KNOWN, f"not charbot settings: {sorted(set(ours) - KNOWN)}"
    return ours


def starts(command: list[str], subcommand) -> None:
    """Assert that `command` runs the installed `charbot` script's `subcommand`."""
    assert PYPROJECT["project"]["scripts"].get(Path(command[0]).name) == "bot.cli:main"
    assert cli.build_parser().parse_args(command[1:]).func is subcommand


# -- Dockerfile ---------------------------------------------------------------------------


def final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the image's last stage, continued lines joined."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\")
        if not line.rstrip().endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            instructions.append((keyword.upper(), args.strip()))
            pending = ""
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    pairs = [p for keyword, args in final_stage() if keyword == "ENV" for p in shlex.split(args)]
    return dict(pair.split("=", 1) for pair in pairs)


def image_json(keyword: str) -> list[str]:
    (args,) = [args for k, args in final_stage() if k == keyword]
    return json.loads(args)


def healthcheck_command() -> list[str]:
    (args,) = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    command = json.loads(args[args.index("CMD ") + len("CMD ") :])
    assert command[0] == "python"  # the image's interpreter; here, the one running the tests
    return [sys.executable, *command[1:]]


def test_the_dockerfile_follows_hadolints_rules(tmp_path):
    """The image cannot be built where there is no Docker engine (as here); hadolint, the
    Dockerfile linter, checks it against its rules instead."""
    hadolint = [str(Path(sys.executable).with_name("hadolint")), "--no-color"]
    clean = subprocess.run([*hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    careless = tmp_path / "Dockerfile"  # the linter does find faults
    careless.write_text("FROM python:3.11-slim\nRUN apt-get install curl\n")
    found = subprocess.run([*hadolint, str(careless)], capture_output=True, text=True)
    assert found.returncode != 0 and "DL3008" in found.stdout  # unpinned apt package


def test_image_settings_are_ones_the_bot_reads():
    settings = load_settings(for_the_bot(image_env()), env_file=None)
    assert str(settings.data_dir) in image_json("VOLUME")
    assert settings.metrics_address is not None  # the HEALTHCHECK needs /healthz
    assert ipaddress.ip_address(settings.metrics_address[0]).is_loopback


def test_image_runs_the_bot_as_an_unprivileged_user():
    stage = final_stage()
    users = [i for i, (keyword, _) in enumerate(stage) if keyword == "USER"]
    changes = [i for i, (keyword, _) in enumerate(stage) if keyword in ("RUN", "COPY", "ADD")]
    assert users and users[-1] > max(changes)
    user = stage[users[-1]][1].split(":")[0]
    assert user not in ("root", "0")
    starts(image_json("ENTRYPOINT") + image_json("CMD"), cli.cmd_run)


@pytest.fixture(scope="module")
def healthz_server():
    """The bot's /healthz server on a free loopback port, and the switch of its health."""
    state = {"healthy": True}
    server = MetricsServer("127.0.0.1", 0)
    server.serve(Metrics(), lambda: state["healthy"])
    yield server.port, state
    server.close()


@pytest.fixture
def healthz(healthz_server):
    port, state = healthz_server
    state["healthy"] = True
    return port, state


def health_status(address: str) -> int:
    done = subprocess.run(
        healthcheck_command(),
        env={"CHARBOT_METRICS_ADDRESS": address},
        capture_output=True,
        timeout=30,
    )
    return done.returncode


@pytest.mark.parametrize("form", ["{port}", "127.0.0.1:{port}", "0.0.0.0:{port}"])
def test_healthcheck_passes_while_healthz_does(healthz, form):
    port, state = healthz
    address = form.format(port=port)
    host, bound = load_settings({"CHARBOT_METRICS_ADDRESS": address}, env_file=None).metrics_address
    assert bound == port and host in ("127.0.0.1", "0.0.0.0")  # the bot listens there too
    assert health_status(address) == 0
    state["healthy"] = False
    assert health_status(address) == 1  # Docker's "unhealthy"; 2 is reserved


def test_healthcheck_fails_when_nothing_listens():
    server = MetricsServer("127.0.0.1", 0)
    port = server.port
    server.close()
    assert health_status(str(port)) == 1


# -- compose.yaml ---------------------------------------------------------------------

_REFERENCE = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """`value` with ${NAME}, ${NAME:-default}, ${NAME:?error} and $$ replaced, as compose does."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        given = variables.get(name)
        unset = given is None or (given == "" and match.group(2) in (":-", ":?"))
        if unset and match.group(2) in (":?", "?"):
            raise ValueError(f"{name}: {match.group(3)}")
        return match.group(3) if unset and match.group(2) else (given or "")

    return _REFERENCE.sub(replace, value)


def compose_environment(service: dict) -> dict[str, str]:
    """What compose hands `service`: its env_file (the example .env), then `environment`."""
    dotenv = {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if v is not None}
    env_files = service.get("env_file", [])
    env_files = [env_files] if isinstance(env_files, str) else env_files
    assert env_files in ([], [".env"])
    env = dict(dotenv) if env_files else {}
    env.update({k: interpolate(str(v), dotenv) for k, v in service["environment"].items()})
    return env


def built_service(compose: dict) -> dict:
    """The service compose builds from the Dockerfile: the bot."""
    (bot,) = [service for service in compose["services"].values() if "build" in service]
    return bot


def test_compose_gives_the_bot_settings_it_accepts():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    bot = built_service(compose)
    settings = load_settings(for_the_bot(compose_environment(bot)), env_file=None)
    settings.require_token()
    assert settings.admin_ids

    # The database is the compose service the bot waits for until pg_isready says so.
    url = make_url(settings.database_url)
    db = services[url.host]
    assert bot["depends_on"][url.host]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    db_env = compose_environment(db)
    assert (url.username, url.password, url.database) == (
        db_env["POSTGRES_USER"],
        db_env["POSTGRES_PASSWORD"],
        db_env["POSTGRES_DB"],
    )
    (driver,) = PYPROJECT["project"]["optional-dependencies"]["postgres"]
    assert url.get_driver_name() == Requirement(driver).name  # what the image installs

    # The data dir (the model store) is a named volume, at the image's VOLUME.
    mounts = dict(volume.split(":")[:2][::-1] for volume in bot["volumes"])
    assert mounts[str(settings.data_dir)] in compose["volumes"]
    assert str(settings.data_dir) in image_json("VOLUME")

    assert_metrics_published_on_loopback_only(bot, settings)


def test_compose_webhook_variant_is_accepted():
    """The commented webhook lines, uncommented, give settings the bot starts with."""
    text = COMPOSE.read_text()
    lines = re.findall(r"^ *# (CHARBOT_WEBHOOK_\w+: .+)$", text, flags=re.M)
    variant = yaml.safe_load("\n".join(lines))
    env = compose_environment(built_service(yaml.safe_load(text))) | variant
    settings = load_settings(for_the_bot(env), env_file=None)
    assert settings.webhook_url is not None
    assert settings.webhook_listen[0] in ("0.0.0.0", "::")  # the proxy is another host


def assert_metrics_published_on_loopback_only(bot: dict, settings: Settings) -> None:
    published = {}
    for port in bot.get("ports", []):
        host_ip, host_port, container_port = str(port).split("/")[0].rsplit(":", 2)
        assert ipaddress.ip_address(host_ip.strip("[]")).is_loopback, port
        published[int(container_port)] = int(host_port)
    host, port = settings.metrics_address
    assert port in published
    assert host in ("0.0.0.0", "::")  # reachable from outside the container's loopback


def test_deploy_files_name_only_real_settings():
    files = [DOCKERFILE, COMPOSE, *sorted(DEPLOY.iterdir())]
    named = {n for f in files for n in re.findall(r"\bCHARBOT_[A-Z0-9_]+\b", f.read_text())}
    assert named and named <= KNOWN, sorted(named - KNOWN)


# -- systemd units ------------------------------------------------------------------------


def unit(name: str) -> dict[str, list[str]]:
    """`Section.Key` -> its values in order, from a unit file in deploy/."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in (DEPLOY / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            entries.setdefault(f"{section}.{key}", []).append(value)
    return entries


def unit_settings(entries: dict[str, list[str]]) -> Settings:
    """The settings a unit gives the bot: its EnvironmentFile (the example) under Environment=."""
    assert entries["Service.EnvironmentFile"] == ["/etc/charbot/env"]
    env = {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if v is not None}
    for value in entries.get("Service.Environment", []):
        env.update(pair.split("=", 1) for pair in shlex.split(value))
    return load_settings(for_the_bot(env), env_file=None)


def test_service_runs_the_bot_sandboxed_in_its_data_dir():
    entries = unit("charbot.service")
    settings = unit_settings(entries)
    assert entries["Service.User"][0] not in ("root", "0")
    (command,) = entries["Service.ExecStart"]
    starts(shlex.split(command), cli.cmd_run)
    assert entries["Service.ProtectSystem"] == ["strict"]
    writable = {Path(p) for value in entries["Service.ReadWritePaths"] for p in value.split()}
    assert settings.data_dir in writable
    assert entries["Service.WorkingDirectory"] == [str(settings.data_dir)]
    assert entries["Service.KillSignal"] == ["SIGTERM"]


def test_backup_service_writes_a_new_dated_folder_each_night():
    entries = unit("charbot-backup.service")
    settings = unit_settings(entries)
    assert unit("charbot-backup.timer")["Timer.OnCalendar"]
    (command,) = entries["Service.ExecStart"]
    unescaped = command.replace("$$", "$").replace("%%", "%")  # systemd's escapes
    shell, flag, script = shlex.split(unescaped)
    assert (Path(shell).name, flag) == ("sh", "-c")
    exec_, *charbot = shlex.split(script)
    assert exec_ == "exec"
    starts(charbot, cli.cmd_backup)
    before = dt.datetime.now().strftime("%Y-%m-%d")
    shown = subprocess.run(
        [shell, "-c", f'printf %s "{charbot[-1]}"'], capture_output=True, text=True, check=True
    )
    dest = Path(shown.stdout)
    assert before in dest.name or dt.datetime.now().strftime("%Y-%m-%d") in dest.name
    writable = {Path(p) for value in entries["Service.ReadWritePaths"] for p in value.split()}
    assert {dest.parent, settings.data_dir} <= writable
