# Fresh machine: `make demo` or `make test`.  Both set up .venv (PyPI ROS 2 wheels, torch,
# ...) and the colcon build first; the set-up is idempotent and takes seconds once done.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV := .venv
DEPS_STAMP := $(VENV)/.deps-stamp
BUILD_STAMP := install/.dashnet-build-stamp
SOURCES := CMakeLists.txt package.xml $(wildcard msg/*.msg) \
	$(shell find dashnet_ros launch config -type f -not -name '*.pyc' 2>/dev/null)
# The environment every command runs in: the venv, the colcon install, loopback-only DDS.
ENV := source $(VENV)/bin/activate && source install/setup.bash && \
	export ROS_AUTOMATIC_DISCOVERY_RANGE=$${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} && \
	export ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-42}

.PHONY: demo test setup build tables bench clean

demo: setup
	$(ENV) && dashnet demo --out out/demo

test: setup
	$(ENV) && python -m pytest -q test

setup: $(BUILD_STAMP)

build: $(BUILD_STAMP)

$(DEPS_STAMP): requirements.txt
	@command -v cmake >/dev/null && command -v g++ >/dev/null || { \
	  echo "cmake and g++ are needed to build the message types: apt-get install cmake g++"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.txt
	touch $@

$(BUILD_STAMP): $(DEPS_STAMP) $(SOURCES)
	source $(VENV)/bin/activate
	export CMAKE_PREFIX_PATH=$(CURDIR)/$(VENV) AMENT_PREFIX_PATH=$(CURDIR)/$(VENV)
	colcon --log-level error build --symlink-install --event-handlers console_cohesion- status- \
	  --cmake-args -DPython3_EXECUTABLE=$(CURDIR)/$(VENV)/bin/python -DBUILD_TESTING=OFF \
	  || { cat log/latest_build/dashnet_ros/stdout_stderr.log; exit 1; }
	touch $@

tables: setup
	$(ENV) && dashnet tables --out out/tables

bench: setup
	$(ENV) && for b in bench/bench_*.py; do python $$b || exit 1; done && python bench/summarize.py

clean:
	rm -rf build install log
