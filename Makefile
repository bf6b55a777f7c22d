# Two set-up commands: `make demo` and `make test`. Both create .venv on a fresh machine; `make lint` too.
PY := .venv/bin/python
PIP := .venv/bin/pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo demo-compare test lint install clean

.venv/.installed: setup.py
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e .[dev,export] $(TORCH_PINS)
	touch $@

install: .venv/.installed

test: .venv/.installed
	$(PY) -m pytest -q tests

# pyflakes, pycodestyle, import order and bug-prone patterns (ruff.toml)
lint: .venv/.installed
	.venv/bin/ruff check .

demo: .venv/.installed
	$(PY) tools/run_demo.py

demo-compare: .venv/.installed
	$(PY) tools/run_demo.py --compare

clean:
	rm -rf .venv output
