# The README's two commands are `make demo` and `make test`; both set up what they need.
.PHONY: install demo test lint typecheck bench bench-delivery soak bench-console fleet-load pg-failover image-boot vm-test vm-bench powercut clean

VENV := .venv
PY := $(VENV)/bin/python
# Every Python tree in the repository: the four distributions, the dev tools, the tests.
SOURCES := daemon contract desk collector tools tests hw-tests

install:
	@tools/bootstrap.sh

demo: install
	@PYTHONPATH=tools $(PY) -m deskwatch_dev.demo $(DEMO_ARGS)

test: install lint typecheck
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	@$(VENV)/bin/ruff check $(SOURCES)
	@$(VENV)/bin/ruff format --check $(SOURCES) >/dev/null || { echo "ruff format: run '$(VENV)/bin/ruff format $(SOURCES)'"; exit 1; }

typecheck: install
	@$(VENV)/bin/mypy

bench: install
	@$(PY) -m deskwatch bench --json $(BENCH_ARGS)

bench-delivery: install
	@PYTHONPATH=tools $(PY) -m deskwatch_dev.bench_delivery $(BENCH_ARGS)

# The collector's fleet figures (docs/central/collector.md): ~10 minutes, not part of `make test`.
FLEET := PYTHONPATH=tools $(PY) -m deskwatch_dev.loadtest --devices 1000 --duration 60 --collectors 2 --db postgresql
fleet-load: install
	@$(FLEET) --multiplier 10 --multiplier 50 --connections 8 $(FLEET_ARGS)
	@$(FLEET) --multiplier 10 --multiplier 50 --connections 9 --cluster --kill-node-at 30 $(FLEET_ARGS)

# PostgreSQL failovers under a loaded collector, synchronous vs asynchronous replication
# (docs/central/collector.md): ~9 s a failover, not part of `make test`.
pg-failover: install
	@PYTHONPATH=tools $(PY) -m deskwatch_dev.pgfailover $(or $(PGFAILOVER_ARGS),--trials 10)
	@PYTHONPATH=tools $(PY) -m deskwatch_dev.pgfailover --trials 3 --partition 0.5

# The appliance image boots in qemu-system-aarch64 under a real systemd: provisioning, READY,
# the read-only view, the watchdog (tests/appliance/test_image_emulator.py; 5-9 min, 18 with a cold
# cache: it builds the arm64 root first; not in `make test`).
image-boot: install
	@DESKWATCH_IMAGE_BOOT=1 $(PY) -m pytest tests/appliance/test_image_emulator.py $(PYTEST_ARGS)

# The appliance image in qemu-system-aarch64: a good A/B update that commits and a bad one
# that rolls back (about 25 min; not in `make test`). VM_ARGS=boot runs the boot scenario.
vm-test: install
	@PYTHONPATH=tools $(PY) -m deskwatch_dev.vmtest $(or $(VM_ARGS),ab)

# `deskwatch bench` on arm64 in that emulator beside the same bench here: real arm64 RSS,
# emulated times (about 35 min a run, ~65 with VM_ARGS="--runs 2"; not in `make test`).
vm-bench: install
	@PYTHONPATH=tools $(PY) -m deskwatch_dev.vmtest bench $(VM_ARGS)

# The long shift (tools/deskwatch_dev/soak.py): 30 simulated days of the real daemon on a simulated
# clock against a real Mosquitto (a 3-day broker outage, retention, daily pauses), its RSS, file
# descriptors, threads, SQLite files and log measured every 6 simulated hours; ~6 min, not in `make test`.
soak: install
	@PYTHONPATH=daemon:contract:tools $(PY) -m deskwatch_dev.soak $(SOAK_ARGS)

bench-console: install
	@PYTHONPATH=tools $(PY) -m deskwatch_dev.bench_console $(BENCH_ARGS)

# Power cuts under a device writing (root; a User-Mode Linux guest): make powercut CUTS=200
powercut: install
	@PYTHONPATH=tools $(PY) -m deskwatch_dev.powercut --cuts $(or $(CUTS),50) $(POWERCUT_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build */build *.egg-info */*.egg-info
