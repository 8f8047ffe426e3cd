# Two commands matter: `make run` and `make test`. Both set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBIAN_PEERS := prometheus victoria-metrics prometheus-node-exporter

.PHONY: help setup system-deps run test unit lint chaos fuzz fuzz-wire fuzz-http soak proto bench bench-receiver bench-pipeline bench-forward bench-restore bench-cpu template deploy clean

setup: $(STAMP)

help:
	@echo "make run        Pub/Sub emulator + receiver + pipeline (+ a demo Prometheus), on this machine"
	@echo "make test       ruff + the whole suite (sets up .venv and the Debian peers)"
	@echo "make unit       the unit tests only"
	@echo "make chaos      the fault tests with long outages (a sink down SINK_DOWN=1800 s, 30 min)"
	@echo "make fuzz       fuzz-wire and fuzz-http"
	@echo "make fuzz-wire  1 M mutated bodies through the compiled decoder, then 1 M under AddressSanitizer"
	@echo "make fuzz-http  1 M mutated HTTP requests to the receiver (FUZZ_REQUESTS=..., FUZZ_HTTP_ARGS=...)"
	@echo "make soak       10 min at half the measured peak: RSS, lost samples, duplicates (SOAK_MINUTES=...)"
	@echo "make bench      bench-receiver, bench-pipeline, bench-forward, bench-restore"
	@echo "make bench-cpu  CPU-s per 1 M samples per process (receiver, pipeline variants, restore) against vmagent, with py-spy profiles (~10 min; BENCH_ARGS=--quick)"
	@echo "make proto      regenerate the protobuf modules"
	@echo "make template / deploy   the Dataflow Flex Template (needs gcloud and a GCP project)"

# pip install -e . also compiles transforms/core/wire/_wire*.c in place; a change to them re-runs the install.
$(STAMP): setup.py requirements/constraints.txt $(wildcard transforms/core/wire/_wire*.c transforms/core/wire/_wire*.h)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e '.[test]'
	@touch $@

# The real peers the tests and benchmarks talk to (Debian packages).
system-deps:
	@missing=""; for b in prometheus victoria-metrics prometheus-node-exporter vmagent; do \
	  command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(DEBIAN_PEERS)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PEERS) >/dev/null; \
	  else echo "missing:$$missing -- run: sudo apt-get install -y $(DEBIAN_PEERS)"; exit 1; fi; \
	fi
	@command -v java >/dev/null || { echo "Java 17 is needed by the Pub/Sub emulator: apt-get install openjdk-17-jre-headless"; exit 1; }

# The embedded default: Pub/Sub emulator + receiver (+ a demo Prometheus when installed).
run: setup
	$(PY) -m tools.run_local $(if $(PORT),--port $(PORT)) $(if $(PUBSUB_PORT),--pubsub-port $(PUBSUB_PORT)) \
	  $(if $(ARCHIVE),--archive $(ARCHIVE)) $(if $(WINDOW),--window-size $(WINDOW)) $(if $(METRICS_PORT),--metrics-port $(METRICS_PORT)) \
	  $(if $(REMOTE_WRITE_URL),--remote-write-url $(REMOTE_WRITE_URL)) $(RUN_ARGS)

test: setup system-deps lint
	PY=$(PY) tests/run_suite.sh

# The fault tests with longer outages than `make test` runs: receiver down 30 s, Pub/Sub unreachable
# 120 s, a sink down 30 minutes (make test: 5 minutes).
SINK_DOWN ?= 1800
chaos: setup system-deps
	CHAOS_RECEIVER_DOWN=30 CHAOS_PUBSUB_DOWN=120 CHAOS_SINK_DOWN=$(SINK_DOWN) $(PY) -m pytest -q -s tests/faults

# At least 1 M mutated requests (bodies, headers, framing) to the receiver over HTTP; fails on a 5xx
# other than 503, a hang, a gunicorn worker restart, or Pub/Sub differing from the 2xx answers.
FUZZ_REQUESTS ?= 1000000
fuzz-http: setup system-deps
	$(PY) -m tools.fuzz_http --requests $(FUZZ_REQUESTS) $(FUZZ_HTTP_ARGS)

# receiver -> pipeline -> archive + VictoriaMetrics for SOAK_MINUTES at half the measured peak: RSS per
# process at start and end (flat within 10 %), lost samples (0) and duplicates.
SOAK_MINUTES ?= 10
soak: setup system-deps
	$(PY) -m tools.soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check .

# 1 M mutated bodies through the compiled decode + validate (+ lines), then 1 M more under AddressSanitizer
# (`make test` runs a 20 k slice: tests/unit/test_wire_fuzz.py). FUZZ_ARGS="--bodies N --seed S".
fuzz-wire: setup
	$(PY) -m tools.fuzz_wire $(FUZZ_ARGS)
	$(PY) -m tools.fuzz_wire --asan --seed 13

fuzz: fuzz-wire fuzz-http

# Regenerate the protobuf modules from transforms/core/wire/proto/*.proto (a test checks they are current).
proto: setup
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. transforms/core/wire/proto/remote_v1.proto transforms/core/wire/proto/remote_v1_view.proto transforms/core/wire/proto/remote_v2.proto

bench: bench-receiver bench-pipeline bench-forward bench-restore

bench-receiver: setup system-deps
	$(PY) -m bench.receiver $(BENCH_ARGS)

bench-pipeline: setup system-deps
	$(PY) -m bench.pipeline $(BENCH_ARGS)

bench-forward: setup system-deps
	$(PY) -m bench.forward $(BENCH_ARGS)

bench-restore: setup system-deps
	$(PY) -m bench.restore $(BENCH_ARGS)

bench-cpu: setup system-deps
	$(PY) -m bench.cpu $(BENCH_ARGS)

# Dataflow Flex Template (needs gcloud, Docker via Cloud Build, and a GCP project; not runnable offline).
PROJECT ?= my-project
REGION ?= us-central1
BUCKET ?= $(PROJECT)-dataflow
IMAGE ?= $(REGION)-docker.pkg.dev/$(PROJECT)/remote-write/archive-pipeline:latest
TEMPLATE ?= gs://$(BUCKET)/templates/archive-pipeline.json
SUBSCRIPTION ?= projects/$(PROJECT)/subscriptions/remote-write-pipeline
DEPLOY_ARCHIVE ?= gs://$(BUCKET)/archive

template:
	gcloud builds submit --project=$(PROJECT) --config=templates/cloudbuild.yaml --substitutions=_IMAGE=$(IMAGE) .
	gcloud dataflow flex-template build $(TEMPLATE) --project=$(PROJECT) --image=$(IMAGE) \
	  --sdk-language=PYTHON --metadata-file=templates/metadata.json

deploy:
	gcloud dataflow flex-template run "archive-$$(date +%Y%m%d-%H%M%S)" --project=$(PROJECT) --region=$(REGION) \
	  --template-file-gcs-location=$(TEMPLATE) \
	  --parameters=input_subscription=$(SUBSCRIPTION),archive_path=$(DEPLOY_ARCHIVE)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
