# Two entry points: `make chat` / `make run` start the bot, `make test` runs every check.
# Each makes the virtual environment itself when it is missing or older than pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: chat run test lint format bench pretrain eval clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

chat: $(STAMP)   ## talk to the bot in this terminal (no token needed)
	$(BIN)/charbot chat

run: $(STAMP)    ## run the Telegram bot (needs TELEGRAM_BOT_TOKEN)
	$(BIN)/charbot run

test: $(STAMP)   ## lint, format check and the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_generate.py

pretrain: $(STAMP)
	$(BIN)/charbot pretrain

eval: $(STAMP)
	$(BIN)/charbot eval

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
