# mcp-orch — `make run` serves the example config; `make test` runs every test.
.PHONY: setup run test lint bench faults

setup:
	@bash scripts/setup.sh

run: setup
	@bash scripts/run-demo.sh

test: setup
	@bash scripts/test.sh

lint: setup
	@.venv/bin/ruff check gateway actors upstream config tests

bench: setup
	@bash scripts/bench.sh

faults: setup
	@.venv/bin/python -m pytest -p no:cacheprovider -m heavy tests/faults
