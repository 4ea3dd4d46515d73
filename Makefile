# The course's commands. Setup (a .venv with everything pinned) is idempotent: it reinstalls only
# when pyproject.toml or constraints.txt changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Tools the venv installs (nbgrader runs `alembic`, tests run `torchrun`) are found without activating it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup grade-setup book book-fast test labs serve grade release clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[book,grade,test]"
	touch $(STAMP)

setup: $(STAMP)

# The full book: every chapter executed with the full-size training runs.
book: setup
	GPT_LAB_PROGRESS=0 $(BIN)/jupyter-book build . -W -n --keep-going

# The same book with GPT_LAB_FAST=1 (tiny training runs), as the tests build it.
book-fast: setup
	GPT_LAB_FAST=1 GPT_LAB_PROGRESS=0 $(BIN)/jupyter-book build . --path-output _build/fast -W -n --keep-going

# The whole test suite, on the fast book: library, labs, grading, notebooks, browser. Two pytest-xdist
# workers: one alone leaves a core idle while it waits on a kernel or a sandbox. The slowest 30 tests are
# listed at the end (the suite's budget is 20 minutes on 2 cores).
test: book-fast
	GPT_LAB_FAST=1 GPT_LAB_BOOK_HTML=_build/fast/_build/html $(BIN)/python -m pytest -n 2 --durations=30
	GPT_LAB_FAST=1 GPT_LAB_PROGRESS=0 $(BIN)/python -m pytest --nbval-lax solutions -p no:cacheprovider -q

# labs/ = nbgrader's student version of every source notebook in solutions/ (config: nbgrader_config.py).
labs: setup
	for lab in $$(ls solutions); do $(BIN)/nbgrader generate_assignment "$$lab" --force || exit 1; done

serve:
	$(BIN)/python -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

# The grader runs student code inside bubblewrap (Debian/Ubuntu package `bubblewrap`); without it,
# `gpt-lab-grade` stops unless UNSANDBOXED=1 (the grade table then says "unsandboxed").
grade-setup: setup
	@command -v bwrap >/dev/null 2>&1 || { if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "make grade: install bubblewrap (apt-get install bubblewrap) to sandbox student code" >&2; fi; }

grade: grade-setup
	$(BIN)/gpt-lab-grade $(LAB) $(SUBMISSIONS) --course . $(if $(OUT),--out $(OUT)) $(if $(JOBS),--jobs $(JOBS)) \
	  $(if $(TIMEOUT),--timeout $(TIMEOUT)) $(if $(MEMORY),--memory-mb $(MEMORY)) \
	  $(if $(PATTERN),--name-regex '$(PATTERN)') $(if $(ROSTER),--roster $(ROSTER)) $(if $(ONLY),--only $(ONLY)) \
	  $(if $(WALL_FACTOR),--wall-factor $(WALL_FACTOR)) $(if $(UNSANDBOXED),--unsandboxed)

# The students' repository: book sources, labs/, gpt_lab/ and a students' README; no solutions/, hidden
# checks or grader (gpt_lab_grader/release.py, checked by tests/grading/test_release.py).
release: setup
	test -n "$(DEST)" || { echo "usage: make release DEST=folder" >&2; exit 2; }
	$(BIN)/python -m gpt_lab_grader.release "$(DEST)" --course .

clean:
	rm -rf _build .pytest_cache
