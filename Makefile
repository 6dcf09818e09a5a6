# relay25 — plain GNU make.
#   make                 build/relay25
#   make check           unit + integration tests (installs missing deps)
#   make check SANITIZE=1  the same with ASan+UBSan
#   make check VALGRIND=1  the same with relay25 run under valgrind (errors
#                        and definite leaks fail the test)
#   make fuzz            build tests/fuzz/fuzz_*.c with clang + libFuzzer +
#                        ASan/UBSan into build-fuzz/ and run each for
#                        FUZZ_SECONDS (default 60) on a copy of its corpus
#   make demo            end-to-end demonstration on loopback
#   make install         PREFIX=/usr/local DESTDIR=
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR    ?=
CC         ?= cc
CFLAGS     ?= -O2 -g
BUILD      ?= build
PKG_CONFIG ?= pkg-config

WARN     := -std=c11 -Wall -Wextra -Werror -Werror=implicit-function-declaration \
            -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wno-format-nonliteral
CPPFLAGS += -D_GNU_SOURCE -Iinclude -MMD -MP
DEP_CFLAGS := $(shell $(PKG_CONFIG) --cflags wolfssl inih 2>/dev/null)
DEP_LIBS   := $(shell $(PKG_CONFIG) --libs wolfssl inih 2>/dev/null || echo -lwolfssl -linih) -lev -lcrypt -lpthread

ifeq ($(SANITIZE)$(VALGRIND),11)
  $(error SANITIZE=1 and VALGRIND=1 do not mix: valgrind needs a plain build)
endif

ifeq ($(SANITIZE),1)
  BUILD  := build-san
  CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
  LDFLAGS += -fsanitize=address,undefined
endif

ALL_CFLAGS := $(WARN) $(DEP_CFLAGS) $(CFLAGS)

SRCS     := $(wildcard src/*.c)
OBJS     := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
LIB_OBJS := $(filter-out $(BUILD)/obj/main.o,$(OBJS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/unit/%)

.PHONY: all check integration demo install uninstall clean deps fuzz fuzz-build
all: $(BUILD)/relay25

$(BUILD)/relay25: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(DEP_LIBS)

$(BUILD)/obj/%.o: src/%.c | $(BUILD)/obj
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/unit/%: tests/unit/%.c $(LIB_OBJS) | $(BUILD)/unit
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -o $@ $< $(LIB_OBJS) $(LDFLAGS) $(DEP_LIBS) -lcriterion

$(BUILD)/obj $(BUILD)/unit:
	mkdir -p $@

# Install what is missing (Debian/Ubuntu, Fedora, Alpine, Homebrew).
deps:
	@sh contrib/install-deps.sh --if-missing

integration: deps
	$(MAKE) $(BUILD)/relay25
	@RELAY25_BIN=$(abspath $(BUILD)/relay25) SANITIZE=$(SANITIZE) VALGRIND=$(VALGRIND) \
		/usr/bin/env python3 tests/integration/run.py

check: deps
	$(MAKE) $(UNIT_BINS) $(BUILD)/relay25
	@VALGRIND=$(VALGRIND) sh tests/check.sh "$(abspath $(BUILD)/relay25)" "$(SANITIZE)" $(UNIT_BINS)

# libFuzzer targets: every tests/fuzz/fuzz_NAME.c, linked with the library
# objects (all of src/ but main.c) built by clang with coverage
# instrumentation and ASan/UBSan into build-fuzz/; each runs FUZZ_SECONDS on
# a copy of tests/fuzz/corpus/NAME (the committed corpus is not grown).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer
FUZZ_CFLAGS  ?= -O1 -g
FUZZ_SRCS    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(FUZZ_SRCS:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_OBJS    := $(filter-out $(FUZZ_BUILD)/obj/main.o,$(SRCS:src/%.c=$(FUZZ_BUILD)/obj/%.o))

fuzz: fuzz-build
	@sh tests/fuzz/run.sh "$(FUZZ_SECONDS)" "$(FUZZ_BUILD)" $(FUZZ_BINS)

fuzz-build: $(FUZZ_BINS)

.SECONDARY: $(FUZZ_OBJS)

$(FUZZ_BUILD)/obj/%.o: src/%.c | $(FUZZ_BUILD)/obj
	$(FUZZ_CC) $(CPPFLAGS) $(WARN) $(DEP_CFLAGS) $(FUZZ_CFLAGS) \
		-fsanitize=fuzzer-no-link $(FUZZ_SAN) -c -o $@ $<

$(FUZZ_BUILD)/%: tests/fuzz/%.c $(FUZZ_OBJS) | $(FUZZ_BUILD)/obj
	$(FUZZ_CC) $(CPPFLAGS) $(WARN) $(DEP_CFLAGS) $(FUZZ_CFLAGS) \
		-fsanitize=fuzzer $(FUZZ_SAN) -o $@ $< $(FUZZ_OBJS) $(DEP_LIBS)

$(FUZZ_BUILD)/obj:
	mkdir -p $@

demo: deps
	$(MAKE) $(BUILD)/relay25
	@sh tests/demo.sh "$(abspath $(BUILD)/relay25)"

install: $(BUILD)/relay25
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(SYSCONFDIR)/relay25
	install -m 0755 $(BUILD)/relay25 $(DESTDIR)$(PREFIX)/sbin/relay25
	install -m 0640 etc/relay25.ini $(DESTDIR)$(SYSCONFDIR)/relay25/relay25.ini.example
	@if [ -d man ] && ls man/*.[0-9] >/dev/null 2>&1; then \
		for m in man/*.[0-9]; do s=$${m##*.}; \
		install -d $(DESTDIR)$(PREFIX)/share/man/man$$s; \
		install -m 0644 $$m $(DESTDIR)$(PREFIX)/share/man/man$$s/; done; fi

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/relay25 $(DESTDIR)$(SYSCONFDIR)/relay25/relay25.ini.example
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/relay25.8 $(DESTDIR)$(PREFIX)/share/man/man5/relay25.ini.5

# Benchmark (tests/bench/, issue 5): the C upstream and load generator into
# build/bench/, the peers installed if missing, then tests/bench/bench.py;
# BENCH_SCALE=0.1 for a quick run (see bench.py for the other BENCH_*).
BENCH_DIR  := build/bench
BENCH_BINS := $(BENCH_DIR)/bench-upstream $(BENCH_DIR)/bench-loadgen

.PHONY: bench bench-build
bench: bench-build
	@sh tests/bench/install-peers.sh --if-missing || echo "bench: peers not installed; they are skipped"
	@RELAY25_BIN=$(abspath $(BUILD)/relay25) /usr/bin/python3 tests/bench/bench.py

bench-build: $(BUILD)/relay25 $(BENCH_BINS)

$(BENCH_DIR)/bench-%: tests/bench/%.c | $(BENCH_DIR)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -o $@ $< $(LDFLAGS) $(DEP_LIBS)

$(BENCH_DIR):
	mkdir -p $@

clean:
	rm -rf build build-san build-fuzz

-include $(OBJS:.o=.d) $(UNIT_BINS:=.d) $(FUZZ_OBJS:.o=.d) $(FUZZ_BINS:=.d)
