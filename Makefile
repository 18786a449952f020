# FlowKit — the two commands a newcomer needs: `make demo` and `make test`.
SWIFT ?= swift
FLOWCTL_DEBUG = .build/debug/flowctl
FLOWCTL_RELEASE = .build/release/flowctl

.PHONY: help deps build release install test demo run start stop status logs reset bench bench-compare bench-profile faults stress stress-quick clean docker-config k8s-validate migrations example

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: ## install missing Debian packages (libpq, hiredis, PostgreSQL, Redis)
	@scripts/deps.sh

build: deps ## debug build of flowctl
	$(SWIFT) build --product flowctl

release: deps ## release build of flowctl
	$(SWIFT) build -c release --product flowctl

PREFIX ?= /usr/local
install: release ## put the release flowctl on the PATH ($(PREFIX)/bin)
	install -m 0755 $(FLOWCTL_RELEASE) $(PREFIX)/bin/flowctl
	@echo "installed $(PREFIX)/bin/flowctl: try 'flowctl --help'"

test: deps ## unit and integration tests against a real PostgreSQL and Redis
	@scripts/test.sh

demo: build ## run catalunya_data_pipeline end to end in standalone mode and show it
	@scripts/demo.sh $(FLOWCTL_DEBUG)

run: build ## standalone in the foreground (API on :8080, scheduler, two workers)
	$(FLOWCTL_DEBUG) standalone

start: build ## the local stack in the background (dashboard on :8080); returns when it is healthy
	@FLOWCTL=$(FLOWCTL_DEBUG) scripts/local.sh start

stop: ## stop the local stack (its data stays in .flowkit/)
	@scripts/local.sh stop

status: ## is the local stack running, and its health
	@scripts/local.sh status

logs: ## follow the local stack's log
	@scripts/local.sh logs

reset: ## delete the local stack's runs and data (asks first; FORCE=1 does not)
	@scripts/local.sh reset

bench: release ## the docs/benchmarks.md workloads, beside Celery
	@scripts/bench.sh $(FLOWCTL_RELEASE)

BASE ?= HEAD
bench-compare: release ## the working tree against BASE (a git rev) on the same servers, A B B A (ROUNDS=3, ONLY=W1,W2)
	@scripts/bench_compare.py $(BASE)

bench-profile: release ## what a W2 hop costs in statements, transactions, Redis commands and CPU: the working tree beside BASE
	@scripts/bench_compare.py $(BASE) --profile

faults: build ## the fault-injection suite (also builds the two binaries of its rolling-upgrade scenario)
	$(SWIFT) build --product upgrade-fixture-v1
	$(SWIFT) build --product upgrade-fixture-v2
	@scripts/faults.sh $(FLOWCTL_DEBUG)

stress: release build ## liveness under concurrent load: 20 and 100 waiting clients, readers, a 1,000-run burst, a backfill race, overload by 50 debug clients
	@scripts/stress.py $(FLOWCTL_RELEASE) --overload-client $(FLOWCTL_DEBUG)

stress-quick: build ## the bounded form of make stress that CI runs
	@scripts/stress.py $(FLOWCTL_DEBUG) --quick

example: deps ## build Examples/MyFlows, the template for your own flows and flowctl, run its tests, and its make dev loop on a copy
	$(SWIFT) build --package-path Examples/MyFlows --scratch-path .build-myflows --product myflowctl
	.build-myflows/debug/myflowctl flows validate
	.build-myflows/debug/myflowctl flows test daily_report --quiet
	$(SWIFT) test --package-path Examples/MyFlows --scratch-path .build-myflows
	scripts/dev_loop.sh

migrations: ## re-embed migrations/*.sql into the binary
	scripts/embed_migrations.sh

docker-config: ## validate docker/docker-compose.yml (no engine needed)
	docker-compose --env-file docker/.env.example -f docker/docker-compose.yml config -q

k8s-validate: ## render every deploy/kubernetes overlay and validate it (kubernetes-validate --strict, two newest versions)
	scripts/k8s_validate.sh

clean: ## remove build products and local state
	rm -rf .build .flowkit
