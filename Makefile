# relay25 — plain GNU make.
#   make                 build/relay25
#   make check           unit + integration tests (installs missing deps)
#   make check SANITIZE=1  the same with ASan+UBSan
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

.PHONY: all check integration demo install uninstall clean deps
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
	@sh tests/check.sh "$(abspath $(BUILD)/relay25)" "$(SANITIZE)" $(UNIT_BINS)

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

clean:
	rm -rf build build-san

-include $(OBJS:.o=.d) $(UNIT_BINS:=.d)
