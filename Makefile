# punchd build and test entry points.
#
# Every target uses `deno` from PATH when it is 2.9 or newer; otherwise it
# installs the pinned `deno` package from the npm registry into .tools/ (git
# ignored) and uses that. Nothing is downloaded at run time.

DENO_VERSION := 2.9.6
# `deno run` checks for a newer Deno in the background (DNS and HTTPS to deno.land): a root
# daemon must not reach out on its own, and in the lab the queries take a NAT's ports.
export DENO_NO_UPDATE_CHECK := 1
TOOLS := $(CURDIR)/.tools
LOCAL_DENO := $(TOOLS)/node_modules/deno/deno

SYSTEM_DENO := $(shell command -v deno 2>/dev/null)
SYSTEM_OK := $(shell [ -n "$(SYSTEM_DENO)" ] && "$(SYSTEM_DENO)" --version 2>/dev/null | awk 'NR==1 { split($$2, v, "."); if (v[1] > 2 || (v[1] == 2 && v[2] >= 9)) print "yes" }')
ifeq ($(SYSTEM_OK),yes)
DENO := $(SYSTEM_DENO)
DENO_DEP :=
else
DENO := $(LOCAL_DENO)
DENO_DEP := $(LOCAL_DENO)
endif

# What the daemon needs: libc through FFI, reading its own modules and the
# socket path, and running nft. (FFI can do anything the process can; the flags document
# intent rather than confine.)
RUN_FLAGS := --allow-ffi --allow-read --allow-run=nft

.PHONY: all deno deps test fmt lint check unit daemon demo grid bench compile clean

all: test

# Install the pinned Deno from the npm registry (the binary ships inside the
# platform package @deno/linux-*-glibc; npm links it into the deno package).
$(LOCAL_DENO):
	@command -v npm >/dev/null || { echo "make: npm is needed to install deno $(DENO_VERSION)" >&2; exit 1; }
	mkdir -p $(TOOLS)
	npm install --prefix $(TOOLS) --no-audit --no-fund --no-save --loglevel=error deno@$(DENO_VERSION)
	@if ! "$@" --version >/dev/null 2>&1; then \
	  bin=$$(ls $(TOOLS)/node_modules/@deno/linux-*/deno 2>/dev/null | head -n 1); \
	  [ -n "$$bin" ] || { echo "make: no deno binary in the npm package" >&2; exit 1; }; \
	  ln -sf "$$bin" "$@"; \
	fi
	@"$@" --version | head -n 1

deno: $(DENO_DEP)
	@"$(DENO)" --version | head -n 1

# The npm packages deno.json names (smol-toml for punchd's configuration file, fast-check for the
# tests), fetched from the npm registry into Deno's cache at set-up, as the lock pins them, so
# that nothing is fetched when punchd or the tests run. Instant once cached.
deps: $(DENO_DEP)
	"$(DENO)" install --frozen --quiet

fmt: deps
	"$(DENO)" fmt --check

lint: deps
	"$(DENO)" lint

check: deps
	"$(DENO)" check src ffi tests

# Tests run with every permission: they read /proc/PID/fd of the daemons they
# start (Deno grants /proc only with --allow-all); the daemons they spawn get
# the narrow set README documents.
unit: deps
	"$(DENO)" test --allow-all tests/

# The README's test command: formatting, lint, type check, then every test.
test: fmt lint check unit

# punchd's main job end to end: two peers behind two NATs in the lab punch a
# direct TCP connection with tcp-nutss. Needs root, like punchd itself.
demo: deps
	@[ "$$(id -u)" = 0 ] || { echo "make demo: needs root (network namespaces and nftables), like punchd: run sudo make demo" >&2; exit 1; }
	@command -v ip >/dev/null && command -v nft >/dev/null || { echo "make demo: needs iproute2 and nftables (apt-get install -y iproute2 nftables)" >&2; exit 1; }
	"$(DENO)" run --allow-all src/examples/demo.ts

# The traversal grid (tests/lab/grid.ts): every pair of lab NAT profiles against every
# technique and auto, N attempts per cell; writes grid.md, grid.json and grid.html into
# GRID_DIR and fails when a check fails. GRID_ARGS passes more flags (--pairs, --techniques,
# --timeout, --threshold). Needs root, like the lab.
N ?= 10
GRID_DIR ?= grid
grid: deps
	@[ "$$(id -u)" = 0 ] || { echo "make grid: needs root (network namespaces and nftables), like punchd: run sudo make grid" >&2; exit 1; }
	"$(DENO)" run --allow-all tests/lab/grid.ts --n $(N) --out $(GRID_DIR) $(GRID_ARGS)

# The benchmarks (tests/bench/main.ts): time to connect per technique and NAT pair against the
# floor the path allows, daemon start-up, and the other sections; prints one table and writes
# build/bench/latest.json. BENCH_ARGS passes more flags (--quick, --trials N, --only a,b,
# --json FILE). Needs root, like the lab. A benchmark, not part of make test.
bench: deps
	@[ "$$(id -u)" = 0 ] || { echo "make bench: needs root (network namespaces and nftables), like punchd: run sudo make bench" >&2; exit 1; }
	@command -v ip >/dev/null && command -v nft >/dev/null && [ -x /usr/bin/python3 ] || { echo "make bench: needs iproute2, nftables and python3 (apt-get install -y iproute2 nftables python3)" >&2; exit 1; }
	"$(DENO)" run --allow-all tests/bench/main.ts $(BENCH_ARGS)

# The peer systems make bench runs beside punchd (hyperdht, node-datachannel, js-libp2p and Node 22
# itself, all npm packages), installed from the npm registry as tests/bench/peers/package-lock.json
# pins them, into .tools/bench (git ignored). Only here: never at run time, never in make test.
.PHONY: bench-deps
bench-deps:
	@command -v npm >/dev/null || { echo "make bench-deps: npm is needed to install the bench peers" >&2; exit 1; }
	mkdir -p $(TOOLS)/bench
	cp tests/bench/peers/package.json tests/bench/peers/package-lock.json $(TOOLS)/bench/
	cd $(TOOLS)/bench && npm ci --no-audit --no-fund --loglevel=error

daemon: deps
	"$(DENO)" run $(RUN_FLAGS) src/daemon/main.ts $(ARGS)

# One self-contained executable. deno compile needs Deno's runtime base
# binary; set DENORT_BIN to a local copy (it cannot be downloaded here).
compile: deps
	@[ -n "$$DENORT_BIN" ] && [ -x "$$DENORT_BIN" ] || { echo "make compile: set DENORT_BIN to a local denort $(DENO_VERSION) binary (it is not downloaded)" >&2; exit 1; }
	"$(DENO)" compile $(RUN_FLAGS) --include src/techniques --output dist/punchd src/daemon/main.ts

# The C client library (src/client/c, libc only): build/c/libpunchd.a, its header beside the
# source, and the example program build/c/punchd_example. CC, CFLAGS, AR and the output
# directory C_BUILD as usual.
C_CLIENT_FLAGS := -std=c99 -Wall -Wextra
CFLAGS ?= -O2
C_BUILD ?= build/c
.PHONY: c-client
c-client: $(C_BUILD)/libpunchd.a $(C_BUILD)/punchd_example

$(C_BUILD)/punchd.o: src/client/c/punchd.c src/client/c/punchd.h
	@mkdir -p $(C_BUILD)
	$(CC) $(C_CLIENT_FLAGS) $(CFLAGS) -c -o $@ src/client/c/punchd.c

$(C_BUILD)/libpunchd.a: $(C_BUILD)/punchd.o
	rm -f $@
	$(AR) rcs $@ $(C_BUILD)/punchd.o

$(C_BUILD)/punchd_example: src/client/c/punchd_example.c src/client/c/punchd.h $(C_BUILD)/libpunchd.a
	$(CC) $(C_CLIENT_FLAGS) $(CFLAGS) -Isrc/client/c -o $@ src/client/c/punchd_example.c $(C_BUILD)/libpunchd.a

clean:
	rm -rf dist build

# Self-contained executables, offline: dist/punchd, dist/punchd-rendezvous and dist/punchctl,
# each a shell header plus the Deno runtime and punchd's modules, unpacked once into a cache
# directory and run with fixed permissions (src/packaging/dist.ts). Work files go to build/.
PACKAGING_FLAGS := --allow-read --allow-write --allow-run --allow-env
.PHONY: dist deb man
dist: deps
	"$(DENO)" run $(PACKAGING_FLAGS) src/packaging/dist.ts --deno "$(DENO)" --out dist --build build/dist

# The Debian package dist/punchd_VERSION_ARCH.deb (dpkg-deb, offline): the same tree under
# /usr/lib/punchd, wrappers in /usr/bin, the systemd unit, man pages, /etc/punchd/punchd.toml.
deb: deps
	"$(DENO)" run $(PACKAGING_FLAGS) src/packaging/deb.ts --deno "$(DENO)" --out dist --build build/deb

# Man pages into build/man (from src/docs/man.ts, when it exists).
man: deps
	@if [ -f src/docs/man.ts ]; then \
	  "$(DENO)" run --allow-read --allow-write --allow-run src/docs/man.ts --out build/man; \
	else \
	  echo "make man: src/docs/man.ts does not exist yet; no man pages" >&2; \
	fi
