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
#   make install         PREFIX=/usr/local DESTDIR= (relay25, example ini, man pages)
#   make install-systemd relay25.service/.socket into SYSTEMDUNITDIR (default
#                        PREFIX/lib/systemd/system), sysusers entry into
#                        SYSUSERSDIR (PREFIX/lib/sysusers.d)
#   make install-sendmail  relay25-sendmail (also part of make install) plus
#                        a `sendmail` symlink to it in PREFIX/sbin
#   make uninstall       removes what both installed
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
MANDIR     ?= $(PREFIX)/share/man
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR    ?= $(PREFIX)/lib/sysusers.d
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

# relay25-sendmail (src/sendmail/): the sendmail(8) front door. It links
# the pure reply parser and inih, nothing else of relay25.
SM_SRCS     := $(wildcard src/sendmail/*.c)
SM_OBJS     := $(SM_SRCS:src/sendmail/%.c=$(BUILD)/obj/sendmail/%.o)
SM_LIB_OBJS := $(filter-out $(BUILD)/obj/sendmail/main.o,$(SM_OBJS))
SM_LIBS     := $(shell $(PKG_CONFIG) --libs inih 2>/dev/null || echo -linih)

.PHONY: all check integration demo install install-systemd uninstall clean deps fuzz fuzz-build
.PHONY: install-sendmail
all: $(BUILD)/relay25 $(BUILD)/relay25-sendmail

$(BUILD)/relay25: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(DEP_LIBS)

$(BUILD)/obj/%.o: src/%.c | $(BUILD)/obj
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/unit/%: tests/unit/%.c $(LIB_OBJS) | $(BUILD)/unit
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -o $@ $< $(LIB_OBJS) $(LDFLAGS) $(DEP_LIBS) -lcriterion

$(BUILD)/obj $(BUILD)/unit $(BUILD)/obj/sendmail:
	mkdir -p $@

$(BUILD)/relay25-sendmail: $(SM_OBJS) $(BUILD)/obj/smtp_parse.o
	$(CC) $(LDFLAGS) -o $@ $(SM_OBJS) $(BUILD)/obj/smtp_parse.o $(SM_LIBS)

$(BUILD)/obj/sendmail/%.o: src/sendmail/%.c | $(BUILD)/obj/sendmail
	$(CC) $(CPPFLAGS) -Isrc/sendmail $(ALL_CFLAGS) -c -o $@ $<

# The sendmail unit test also links the sendmail modules (not its main).
$(BUILD)/unit/test_sendmail: tests/unit/test_sendmail.c $(SM_LIB_OBJS) $(LIB_OBJS) | $(BUILD)/unit
	$(CC) $(CPPFLAGS) -Isrc/sendmail $(ALL_CFLAGS) -o $@ $< $(SM_LIB_OBJS) $(LIB_OBJS) \
		$(LDFLAGS) $(DEP_LIBS) -lcriterion

# Install what is missing (Debian/Ubuntu, Fedora, Alpine, Homebrew).
deps:
	@sh contrib/install-deps.sh --if-missing

integration: deps
	$(MAKE) $(BUILD)/relay25 $(BUILD)/relay25-sendmail
	@RELAY25_BIN=$(abspath $(BUILD)/relay25) SANITIZE=$(SANITIZE) VALGRIND=$(VALGRIND) \
		/usr/bin/env python3 tests/integration/run.py

check: deps
	$(MAKE) $(UNIT_BINS) $(BUILD)/relay25 $(BUILD)/relay25-sendmail
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

install: $(BUILD)/relay25 $(BUILD)/relay25-sendmail
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(SYSCONFDIR)/relay25 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BUILD)/relay25 $(DESTDIR)$(PREFIX)/sbin/relay25
	install -m 0755 $(BUILD)/relay25-sendmail $(DESTDIR)$(PREFIX)/sbin/relay25-sendmail
	install -m 0644 man/relay25-sendmail.8 $(DESTDIR)$(MANDIR)/man8/relay25-sendmail.8
	install -m 0640 etc/relay25.ini $(DESTDIR)$(SYSCONFDIR)/relay25/relay25.ini.example
	install -m 0644 man/relay25.8 $(DESTDIR)$(MANDIR)/man8/relay25.8
	install -m 0644 man/relay25.ini.5 $(DESTDIR)$(MANDIR)/man5/relay25.ini.5

# systemd units (Type=notify service, socket activation) and the sysusers.d
# entry that creates the relay25 user; ExecStart follows PREFIX.
#   make install install-systemd PREFIX=/usr && systemd-sysusers relay25.conf
install-systemd:
	install -d $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	sed 's|/usr/local/sbin/relay25|$(PREFIX)/sbin/relay25|g; s|/etc/relay25/|$(SYSCONFDIR)/relay25/|g' \
		contrib/systemd/relay25.service > $(DESTDIR)$(SYSTEMDUNITDIR)/relay25.service.tmp
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/relay25.service.tmp
	mv -f $(DESTDIR)$(SYSTEMDUNITDIR)/relay25.service.tmp $(DESTDIR)$(SYSTEMDUNITDIR)/relay25.service
	install -m 0644 contrib/systemd/relay25.socket $(DESTDIR)$(SYSTEMDUNITDIR)/relay25.socket
	install -m 0644 contrib/systemd/relay25.sysusers $(DESTDIR)$(SYSUSERSDIR)/relay25.conf

# relay25-sendmail and, only when asked for, the `sendmail` name for it: a
# symlink beside it. An existing sendmail that is not that symlink stays.
install-sendmail: $(BUILD)/relay25-sendmail
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BUILD)/relay25-sendmail $(DESTDIR)$(PREFIX)/sbin/relay25-sendmail
	install -m 0644 man/relay25-sendmail.8 $(DESTDIR)$(MANDIR)/man8/relay25-sendmail.8
	@if [ -e $(DESTDIR)$(PREFIX)/sbin/sendmail ] && \
	    [ "$$(readlink $(DESTDIR)$(PREFIX)/sbin/sendmail)" != relay25-sendmail ]; then \
		echo "install-sendmail: $(DESTDIR)$(PREFIX)/sbin/sendmail exists and is not" \
		     "relay25-sendmail; left alone" >&2; exit 1; fi
	ln -sfn relay25-sendmail $(DESTDIR)$(PREFIX)/sbin/sendmail

# Removes everything install and install-systemd put in place (the
# configuration file itself, relay25.ini, is yours and stays).
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/relay25 $(DESTDIR)$(SYSCONFDIR)/relay25/relay25.ini.example
	rm -f $(DESTDIR)$(PREFIX)/sbin/relay25-sendmail $(DESTDIR)$(MANDIR)/man8/relay25-sendmail.8
	@if [ "$$(readlink $(DESTDIR)$(PREFIX)/sbin/sendmail 2>/dev/null)" = relay25-sendmail ]; then \
		echo rm -f $(DESTDIR)$(PREFIX)/sbin/sendmail; rm -f $(DESTDIR)$(PREFIX)/sbin/sendmail; fi
	rm -f $(DESTDIR)$(MANDIR)/man8/relay25.8 $(DESTDIR)$(MANDIR)/man5/relay25.ini.5
	rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/relay25.service $(DESTDIR)$(SYSTEMDUNITDIR)/relay25.socket
	rm -f $(DESTDIR)$(SYSUSERSDIR)/relay25.conf
	rmdir $(DESTDIR)$(SYSCONFDIR)/relay25 2>/dev/null || true

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

-include $(OBJS:.o=.d) $(SM_OBJS:.o=.d) $(UNIT_BINS:=.d) $(FUZZ_OBJS:.o=.d) $(FUZZ_BINS:=.d)
