# Two commands matter: `make run` and `make test`. Both set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBIAN_PEERS := prometheus victoria-metrics prometheus-node-exporter

.PHONY: help setup system-deps run pubsub test unit lint chaos fuzz fuzz-wire fuzz-http soak soak-streaming proto bench bench-receiver bench-pipeline bench-forward bench-restore bench-cpu bench-streaming-cost bench-archive bench-mixed bench-query template receiver-image deploy check clean

setup: $(STAMP)

help:
	@echo "make setup      build .venv (pinned requirements, compiled decoder); run/test/check do it themselves"
	@echo "make run        Pub/Sub emulator + receiver + pipeline (+ a demo Prometheus), on this machine:"
	@echo "                  ARCHIVE=./archive  ARCHIVE_FORMAT=ndjson|parquet  WINDOW=10 (seconds)"
	@echo "                  DEMO_SINK=1 (a local VictoriaMetrics the pipeline forwards to; DEMO_SINK_PORT=8428)"
	@echo "                  REMOTE_WRITE_URL=http://...  PORT=9201 (receiver)  PUBSUB_PORT=8085  METRICS_PORT=9202"
	@echo "                  NODE_EXPORTER_PORT=9100  PROMETHEUS_PORT=9090  RUN_ARGS='...' (python -m tools.run_local -h)"
	@echo "make pubsub     the Pub/Sub emulator alone (PUBSUB_PORT=8085) with the topic and subscription, for"
	@echo "                  running python -m receiver / python -m pipeline by hand; prints the commands"
	@echo "make check      ruff + the unit and property tests (under 2 minutes; no peers needed)"
	@echo "make test       ruff + the whole suite, slowest 15 printed (sets up .venv and the Debian peers)"
	@echo "make unit       the unit tests only"
	@echo "make chaos      the fault tests with long outages (a sink down SINK_DOWN=1800 s, 30 min)"
	@echo "make fuzz       fuzz-wire and fuzz-http"
	@echo "make fuzz-wire  1 M mutated bodies through the compiled decoder, then 1 M under ASan + UBSan + leak checks"
	@echo "make fuzz-http  1 M mutated HTTP requests to the receiver (FUZZ_REQUESTS=..., FUZZ_HTTP_ARGS=...)"
	@echo "make soak       10 min at half the measured peak: RSS, lost samples, duplicates (SOAK_MINUTES=...)"
	@echo "make soak-streaming  the streaming (Dataflow) graph on the local streaming runner, 10 min (SOAK_MINUTES=...)"
	@echo "make bench      bench-receiver, bench-pipeline, bench-forward, bench-restore"
	@echo "make bench-streaming-cost  the streaming (Dataflow) graph on the local streaming runner beside the local loop: CPU-s per 1 M samples, overhead per message beyond the core, py-spy profiles (~20 min; BENCH_ARGS=--quick)"
	@echo "make bench-archive  the archive encoders alone (NDJSON, Parquet from columns), samples per CPU second"
	@echo "make bench-mixed    a request with one native histogram vs a pure-float one: decode + archive, decode + sink bodies"
	@echo "make bench-cpu  CPU-s per 1 M samples per process (receiver, pipeline variants, restore) against vmagent, with py-spy profiles (~10 min; BENCH_ARGS=--quick)"
	@echo "make bench-query  PromQL p50/p99, CPU and bytes per query: the reader (archive as written, then compacted) through"
	@echo "                  Prometheus remote_read vs Prometheus' TSDB vs VictoriaMetrics, 1 h x 10k series (~15 min;"
	@echo "                  BENCH_ARGS=\"--series 2000 --minutes 30 --reps 5\")"
	@echo "make proto      regenerate the protobuf modules"
	@echo "make template / deploy   the Dataflow Flex Template (gcloud, a GCP project: docs/deploy.md; DRY_RUN=1 prints)"
	@echo "make receiver-image      the receiver's image in Artifact Registry (DRY_RUN=1 prints)"

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
	  $(if $(ARCHIVE),--archive $(ARCHIVE)) $(if $(ARCHIVE_FORMAT),--archive-format $(ARCHIVE_FORMAT)) \
	  $(if $(WINDOW),--window-size $(WINDOW)) $(if $(METRICS_PORT),--metrics-port $(METRICS_PORT)) \
	  $(if $(REMOTE_WRITE_URL),--remote-write-url $(REMOTE_WRITE_URL)) \
	  $(if $(filter-out 0,$(DEMO_SINK)),--demo-sink) $(if $(DEMO_SINK_PORT),--demo-sink-port $(DEMO_SINK_PORT)) \
	  $(if $(NODE_EXPORTER_PORT),--node-exporter-port $(NODE_EXPORTER_PORT)) \
	  $(if $(PROMETHEUS_PORT),--prometheus-port $(PROMETHEUS_PORT)) $(RUN_ARGS)

# The Pub/Sub emulator alone, with the topic and subscription `python -m receiver` / `python -m pipeline` use.
pubsub: setup
	$(PY) -m tools.pubsub_local $(if $(PUBSUB_PORT),--port $(PUBSUB_PORT)) $(PUBSUB_ARGS)

test: setup system-deps lint
	PY=$(PY) tests/run_suite.sh

# The fault tests with longer outages than `make test` runs: receiver down 30 s, Pub/Sub unreachable
# 120 s, a sink down 30 minutes (make test: 5 minutes), and the strict-sink order faults (only here).
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

# the streaming graph (build_streaming) on BundleBasedDirectRunner --streaming: archive + VictoriaMetrics for
# SOAK_MINUTES at half its measured peak; RSS flat within 10 %, 0 lost, 0 duplicates, publish -> file p99 <= window + 15 s
soak-streaming: setup system-deps
	$(PY) -m tools.soak_streaming --minutes $(SOAK_MINUTES) $(SOAK_STREAMING_ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit

# The quick tier while working on the code: no network, no peers (tests/unit holds the property tests too).
check: setup lint
	$(PY) -m pytest -q -m unit tests/unit

lint: setup
	$(VENV)/bin/ruff check .

# 1 M mutated bodies through the compiled decode + validate (+ lines), then 1 M more (and every failed-allocation
# path of the seed bodies) under AddressSanitizer + UndefinedBehaviorSanitizer with leak detection (`make test`
# runs 20 k slices of both: tests/unit/test_wire_fuzz.py, tests/integration/test_wire_sanitizers.py).
# FUZZ_ARGS="--bodies N --seed S".
fuzz-wire: setup
	$(PY) -m tools.fuzz_wire $(FUZZ_ARGS)
	$(PY) -m tools.fuzz_wire --sanitize --seed 13

fuzz: fuzz-wire fuzz-http

# Regenerate the protobuf modules from transforms/core/wire/proto/*.proto (a test checks they are current).
proto: setup
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. transforms/core/wire/proto/remote_v1.proto transforms/core/wire/proto/remote_v1_view.proto transforms/core/wire/proto/remote_v2.proto transforms/core/wire/proto/remote_read.proto

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

bench-streaming-cost: setup system-deps
	$(PY) -m bench.streaming_cost $(BENCH_ARGS)

bench-archive: setup
	$(PY) -m bench.archive_encode $(BENCH_ARGS)

bench-mixed: setup
	$(PY) -m bench.mixed_request $(BENCH_ARGS)

# The same data in Prometheus' TSDB, VictoriaMetrics and the archive (before and after pipeline.compact, read by
# python -m reader through a Prometheus with remote_read); PromQL instant and range queries on each (docs/query.md).
bench-query: setup system-deps
	$(PY) -m bench.query $(BENCH_ARGS)

# Dataflow Flex Template and the receiver's image (need gcloud and a GCP project; docs/deploy.md goes from an
# empty project to data in the bucket). DRY_RUN=1 prints every command, shell-quoted, instead of running it.
PROJECT ?= my-project
REGION ?= us-central1
BUCKET ?= $(PROJECT)-dataflow
REPOSITORY ?= remote-write
IMAGE ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPOSITORY)/archive-pipeline:latest
RECEIVER_IMAGE ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPOSITORY)/receiver:latest
TEMPLATE ?= gs://$(BUCKET)/templates/archive-pipeline.json
SUBSCRIPTION ?= projects/$(PROJECT)/subscriptions/remote-write-pipeline
DEPLOY_ARCHIVE ?= gs://$(BUCKET)/archive
SERVICE_ACCOUNT ?= rw-dataflow@$(PROJECT).iam.gserviceaccount.com
JOB_NAME ?= archive-$$(date +%Y%m%d-%H%M%S)
# Every parameter of templates/metadata.json, as parameter:VARIABLE; a variable left empty leaves the
# template's default (a test keeps this list equal to metadata.json's parameters).
TEMPLATE_PARAMETERS := input_subscription:SUBSCRIPTION archive_path:DEPLOY_ARCHIVE archive_format:ARCHIVE_FORMAT \
  window_size:WINDOW_SIZE dead_letter_path:DEAD_LETTER_PATH max_lines_per_file:MAX_LINES_PER_FILE \
  allowed_lateness:ALLOWED_LATENESS remote_write_url:REMOTE_WRITE_URL remote_write_config:REMOTE_WRITE_CONFIG \
  remote_write_protocol:REMOTE_WRITE_PROTOCOL remote_write_timeout:REMOTE_WRITE_TIMEOUT \
  remote_write_header:REMOTE_WRITE_HEADER remote_write_bearer_token_file:REMOTE_WRITE_BEARER_TOKEN_FILE \
  remote_write_basic_auth_username:REMOTE_WRITE_BASIC_AUTH_USERNAME \
  remote_write_basic_auth_password_file:REMOTE_WRITE_BASIC_AUTH_PASSWORD_FILE \
  remote_write_tenant_header:REMOTE_WRITE_TENANT_HEADER remote_write_tenant:REMOTE_WRITE_TENANT \
  remote_write_max_samples_per_request:REMOTE_WRITE_MAX_SAMPLES_PER_REQUEST \
  remote_write_max_bytes_per_request:REMOTE_WRITE_MAX_BYTES_PER_REQUEST \
  remote_write_shards:REMOTE_WRITE_SHARDS remote_write_healthcheck_url:REMOTE_WRITE_HEALTHCHECK_URL \
  remote_write_order:REMOTE_WRITE_ORDER \
  remote_write_sigv4_region:REMOTE_WRITE_SIGV4_REGION remote_write_sigv4_service:REMOTE_WRITE_SIGV4_SERVICE \
  remote_write_sigv4_role_arn:REMOTE_WRITE_SIGV4_ROLE_ARN remote_write_sigv4_profile:REMOTE_WRITE_SIGV4_PROFILE \
  remote_write_tenant_label:REMOTE_WRITE_TENANT_LABEL remote_write_tenant_label_drop:REMOTE_WRITE_TENANT_LABEL_DROP
# gcloud splits --parameters at commas, and REMOTE_WRITE_URL may hold several: ^~^ makes "~" the separator.
template_parameter = $(if $($(word 2,$(subst :, ,$(1)))),~$(word 1,$(subst :, ,$(1)))=$($(word 2,$(subst :, ,$(1)))))
DEPLOY_PARAMETERS = ^~^$(patsubst ~%,%,$(subst $() ~,~,$(strip $(foreach p,$(TEMPLATE_PARAMETERS),$(call template_parameter,$(p))))))
# Runs a command, or with DRY_RUN=1 prints it (bash's %q quoting: copy-pasteable).
GCLOUD = $(if $(DRY_RUN),@printf '%q ' gcloud,gcloud)
END = $(if $(DRY_RUN),; echo)

template:
	$(GCLOUD) builds submit --project=$(PROJECT) --config=templates/cloudbuild.yaml \
	  --substitutions=_IMAGE=$(IMAGE),_DOCKERFILE=templates/Dockerfile . $(END)
	$(GCLOUD) dataflow flex-template build $(TEMPLATE) --project=$(PROJECT) --image=$(IMAGE) \
	  --sdk-language=PYTHON --metadata-file=templates/metadata.json $(END)

receiver-image:
	$(GCLOUD) builds submit --project=$(PROJECT) --config=templates/cloudbuild.yaml \
	  --substitutions=_IMAGE=$(RECEIVER_IMAGE),_DOCKERFILE=templates/receiver.Dockerfile . $(END)

deploy:
	$(GCLOUD) dataflow flex-template run "$(JOB_NAME)" --project=$(PROJECT) --region=$(REGION) \
	  --template-file-gcs-location=$(TEMPLATE) --service-account-email=$(SERVICE_ACCOUNT) \
	  --staging-location=gs://$(BUCKET)/staging --temp-location=gs://$(BUCKET)/temp \
	  $(if $(MAX_WORKERS),--max-workers=$(MAX_WORKERS)) --parameters='$(DEPLOY_PARAMETERS)' $(END)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
