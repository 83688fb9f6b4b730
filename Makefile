# batchd entry points. `make run` serves the demo models; `make test` is what CI runs.
# Everything builds with at most $(JOBS) parallel jobs (the reference machine has 2 cores).
#
#   make setup       Debian packages + ONNX Runtime 1.30.0 (scripts/setup.sh; idempotent);
#                    GPU=1 also the GPU build of ONNX Runtime 1.29.0 in third_party/onnxruntime-gpu/
#   make build       cmake RelWithDebInfo build in $(BUILD)/
#   make demo        demo model repository in $(DEMO)/ (tools/make_demo.py)
#   make run         setup + build + demo, then serve the demo on $(HOST):$(PORT)
#   make test-models ONNX models for the tests in $(TEST_MODELS)/ (tools/make_models.py)
#   make unit        unit tests (ctest in $(BUILD)/)
#   make e2e         end-to-end tests (pytest tests/e2e against $(BUILD)/batchd)
#   make asan        ASan+UBSan build in $(ASAN_BUILD)/, then its unit and end-to-end tests
#   make fuzz        build the libFuzzer targets, replay their corpora, fuzz each $(FUZZ_SECS) s
#   make test        setup (with the GPU build), build, test-models, format-check, unit, e2e,
#                    asan, fuzz
#   make bench       bench/run.sh
#   make soak        $(SOAK_MINUTES) minutes of mixed load on the demo: RSS, fds and threads over
#                    time, every unexpected answer (bench/soak.py; not part of `make test`)
#   make tsan        ThreadSanitizer build in build-tsan/, then the threaded unit tests and the
#                    end-to-end tests that drive the server's threads hardest
#   make valgrind    the server under valgrind's memcheck on the demo (not part of `make test`)
#   make format      clang-format the sources in place (make format-check: only check)
#   make clean       remove the build folders and $(DEMO)/ (distclean: also third_party/)
#   make help        this list (plain `make` is `make build`)

# Debian's python: the pyenv python3 earlier on PATH lacks numpy, sklearn, onnx and pytest.
PYTHON     ?= /usr/bin/python3
JOBS       ?= 2
BUILD      ?= build
ASAN_BUILD ?= build-asan
BUILD_TYPE ?= RelWithDebInfo
DEMO       ?= models-demo
# tests/e2e/conftest.py looks for its ONNX models exactly here.
TEST_MODELS ?= build/test-models
HOST       ?= 127.0.0.1
PORT       ?= 8000
# 1: `make setup` also installs the GPU build of ONNX Runtime (about 330 MB from npm).
GPU        ?= 0
# Seconds each fuzz target runs after replaying its corpus: 30 on CI, 0 (replay only) elsewhere.
FUZZ_SECS  ?= $(if $(CI),30,0)
SOAK_MINUTES ?= 10

# Targets run one after another even under `make -j`: each one already uses $(JOBS) jobs.
.NOTPARALLEL:
.DEFAULT_GOAL := build
.PHONY: help setup setup-gpu build demo run test-models unit e2e asan asan-build asan-unit asan-e2e test \
        bench soak valgrind tsan format format-check fuzz clean distclean

# Sanitizer settings for every run of the ASan binaries. Leak suppressions go to LSan only:
# ASan's own `suppressions=` would reject the file's `leak:` lines.
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1 \
            LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# cmake's own make is not a sub-make of this one: without these it prints "Entering directory"
# around every step, and -j comes from JOBS anyway.
CMAKE_BUILD := MAKEFLAGS= MAKELEVEL= cmake --build

# pytest exits 5 when it collected no tests; that is a failure here, like any other non-zero.
PYTEST := $(PYTHON) -m pytest tests/e2e -q -p no:cacheprovider

help:
	@sed -n '4,/^$$/s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

setup:
	@scripts/setup.sh $(if $(filter 1,$(GPU)),--gpu)

# make test installs the GPU build too (about 20 s on the reference machine, npm cache cold), so
# test_gpu.py's checks that need no GPU (the 1.29 library on the CPU, the CUDA failure
# sentences) run in CI instead of skipping. `make setup` and `make run` leave it out.
setup-gpu:
	@scripts/setup.sh --gpu

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	$(CMAKE_BUILD) $(BUILD) -j$(JOBS)

# The demo is rebuilt when missing or older than the script that makes it.
demo: $(DEMO)/digits/1/model.onnx

# make_demo.py writes each model into a staging folder and renames it in last, so the model
# file's time is the time of the last complete run.
$(DEMO)/digits/1/model.onnx: tools/make_demo.py
	$(PYTHON) tools/make_demo.py --out $(DEMO)

run: setup build demo
	@echo
	@echo "batchd: serving $(DEMO)/ (digits, digits_image: ONNX Runtime; sim_echo: sim backend) on http://$(HOST):$(PORT)"
	@echo "batchd: in another shell, classify a held-out digit (the answer should be label $$(cat $(DEMO)/digits/example.expected)):"
	@echo
	@echo "  curl -s -H 'Content-Type: application/json' -d @$(DEMO)/digits/example.json http://$(HOST):$(PORT)/v2/models/digits/infer"
	@echo
	@echo "batchd: or send it a PNG of a handwritten digit (this one is a 3) and get the top classes:"
	@echo
	@echo "  curl -s --data-binary @$(DEMO)/digits_image/sample_3.png -H 'Content-Type: image/png' 'http://$(HOST):$(PORT)/v2/models/digits_image/infer?classification=3'"
	@echo "  $(BUILD)/batchd infer --url http://$(HOST):$(PORT) --model digits_image --image $(DEMO)/digits_image/sample_3.png --classification 3"
	@echo
	@echo "batchd: Ctrl-C stops the server."
	@echo
	exec $(BUILD)/batchd serve --model-repository $(DEMO) --host $(HOST) --http-port $(PORT)

test-models:
	@if [ ! -f tools/make_models.py ]; then \
	    echo "make: tools/make_models.py does not exist yet, so $(TEST_MODELS)/ cannot be made" >&2; \
	    exit 1; \
	fi
	$(PYTHON) tools/make_models.py --out $(TEST_MODELS) --bad-out $(TEST_MODELS)-bad

unit: build
	ctest --test-dir $(BUILD) --output-on-failure --no-tests=error -j$(JOBS)

e2e: build
	@test -x $(BUILD)/batchd || { echo "make: $(BUILD)/batchd was not built" >&2; exit 1; }
	BATCHD_BIN=$(CURDIR)/$(BUILD)/batchd $(PYTEST)

asan: asan-build asan-unit asan-e2e

asan-build:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DBD_SANITIZE=address,undefined
	$(CMAKE_BUILD) $(ASAN_BUILD) -j$(JOBS)

asan-unit: asan-build
	$(ASAN_ENV) ctest --test-dir $(ASAN_BUILD) --output-on-failure --no-tests=error -j$(JOBS)

asan-e2e: asan-build
	@test -x $(ASAN_BUILD)/batchd || { echo "make: $(ASAN_BUILD)/batchd was not built" >&2; exit 1; }
	$(ASAN_ENV) BATCHD_BIN=$(CURDIR)/$(ASAN_BUILD)/batchd $(PYTEST)

# clang-format 14 with the repository's .clang-format; `make format` rewrites in place.
FORMAT_FILES = $(wildcard src/*/*.c src/*/*.h tests/unit/*.c tests/fuzz/*.c tests/e2e/*.c bench/*.c)
format-check:
	clang-format --dry-run -Werror $(FORMAT_FILES)

format:
	clang-format -i $(FORMAT_FILES)

test: setup-gpu build test-models format-check unit e2e asan fuzz

# Every libFuzzer target (tests/fuzz/build.sh): the seeds and the saved corpus are replayed;
# with FUZZ_SECS > 0 each target then fuzzes that long. A crash fails the run.
fuzz:
	bash tests/fuzz/build.sh $(FUZZ_SECS)

bench: build
	PYTHON=$(PYTHON) BATCHD_BIN=$(BUILD)/batchd ORT_INPROC_BIN=$(BUILD)/ort_inproc bash bench/run.sh

soak: build demo
	$(PYTHON) bench/soak.py --bin $(BUILD)/batchd --demo $(DEMO) --minutes $(SOAK_MINUTES)

# ThreadSanitizer: the threaded unit tests (scheduler, metrics, core, infer), then the server
# under the end-to-end tests that drive its threads hardest (WebSocket, Redis ingest, SIGHUP
# reloads, shutdown, repository loads, batching, cancellation). ONNX Runtime is not built with
# TSan: reports with a frame inside it are suppressed (tests/tsan.supp), and the backend's unit
# tests stay out of this run.
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp
TSAN_E2E := test_websocket.py test_redis.py test_auth.py test_shutdown.py test_repository.py \
            test_batching.py test_cancel.py
tsan:
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBD_SANITIZE=thread
	$(CMAKE_BUILD) build-tsan -j$(JOBS) --target batchd test_sched test_metrics test_core test_infer
	$(TSAN_ENV) ctest --test-dir build-tsan --output-on-failure -R '^(sched|metrics|core|infer)$$'
	$(TSAN_ENV) BATCHD_BIN=$(CURDIR)/build-tsan/batchd $(PYTHON) -m pytest -q -p no:cacheprovider \
	    $(addprefix tests/e2e/,$(TSAN_E2E))

# The server under valgrind's memcheck on the demo models (slow; not part of `make test`).
valgrind: build demo
	bash tests/valgrind.sh $(BUILD)/batchd $(DEMO)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-tsan build-fuzz $(DEMO)

distclean: clean
	rm -rf third_party
