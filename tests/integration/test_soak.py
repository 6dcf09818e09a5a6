"""test_soak.py - resources over many sessions: 5 000 client sessions of
mixed kinds against relay25, then its open file descriptors must be back
to what they were and its resident memory must not have grown (SPEC 1.4:
memory per session is bounded; every session's resources are released).

The mix (session i = 1..N):
  every 50th      a message delivered end to end (the ESP stores it)
  every 100th+1   the client drops mid-DATA (nothing may be stored)
  i % 10 == 3     random bytes, then the client closes
  i % 10 == 7     pipelined bad commands and a half line, then close
  i % 20 == 5     MAIL via a second relay25 whose upstream port is closed
                  (451 4.4.1)
  i % 40 == 15    MAIL via a third relay25 whose ESP refuses MAIL (550)
  otherwise       greeting, EHLO, QUIT
Before measuring, a warm-up round of the same mix, so one-time allocations
(TLS context, resolver, log buffers) are not counted as growth.

The RSS bound is checked only for a plain build (ASan's quarantine and
valgrind change memory use on purpose); fds are checked always. Under
valgrind the session count is scaled down.
"""

import random
import socket
import time

from lib import (SANITIZE, SLOW, VALGRIND, RelayTestCase, dot_stuff, make_message,
                 upstream_for, wait_for)

N = 1000 if VALGRIND else 5000
WARMUP = 100 if VALGRIND else 300
RSS_SLACK_KIB = 2048


class Client:
    """A minimal synchronous SMTP client (no thread: thousands of sessions)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def reply(self):
        while True:
            pos = 0
            while True:
                nl = self.buf.find(b"\n", pos)
                if nl < 0:
                    break
                line = self.buf[pos:nl]
                pos = nl + 1
                if len(line) < 4 or line[3:4] != b"-":
                    self.buf = self.buf[pos:]
                    return int(line[:3]), line.decode("utf-8", "replace").rstrip()
            data = self.s.recv(65536)
            if not data:
                raise EOFError("connection closed; unparsed %r" % self.buf)
            self.buf += data

    def cmd(self, line):
        self.s.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self, reset=False):
        if reset:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        self.s.close()


def fd_count(pid):
    import os
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


class Soak(RelayTestCase):

    def expect(self, got, code, what):
        if got[0] != code:
            raise AssertionError("%s: expected %d, got %r" % (what, code, got))

    def session(self, i, rnd):
        """Run session i of the mix; returns 1 if a message was delivered."""
        if i % 100 == 1:
            c = Client(self.a.port)
            self.expect(c.reply(), 220, "greeting")
            self.expect(c.cmd("EHLO soak.test"), 250, "EHLO")
            self.expect(c.cmd("MAIL FROM:<drop%d@example.test>" % i), 250, "MAIL")
            self.expect(c.cmd("RCPT TO:<r@example.test>"), 250, "RCPT")
            self.expect(c.cmd("DATA"), 354, "DATA")
            c.s.sendall(b"Subject: dropped\r\n\r\n" + b"partial line\r\n" * rnd.randint(1, 300))
            c.close(reset=bool(i % 200 == 1))
            return 0
        if i % 50 == 0:
            c = Client(self.a.port)
            self.expect(c.reply(), 220, "greeting")
            self.expect(c.cmd("EHLO soak.test"), 250, "EHLO")
            self.expect(c.cmd("MAIL FROM:<s%d@example.test>" % i), 250, "MAIL")
            self.expect(c.cmd("RCPT TO:<r@example.test>"), 250, "RCPT")
            self.expect(c.cmd("DATA"), 354, "DATA")
            c.s.sendall(dot_stuff(self.msg))
            self.expect(c.reply(), 250, "end of data")
            self.expect(c.cmd("QUIT"), 221, "QUIT")
            c.close()
            return 1
        if i % 10 == 3:
            c = Client(self.a.port)
            self.expect(c.reply(), 220, "greeting")
            try:
                c.s.sendall(rnd.randbytes(rnd.randint(1, 3000)))
            except OSError:
                pass
            c.close(reset=bool(i % 20 == 3))
            return 0
        if i % 10 == 7:
            c = Client(self.a.port)
            self.expect(c.reply(), 220, "greeting")
            c.s.sendall(b"EHLO\r\nMAIL FROM:<unterminated\r\nRCPT TO:<x@y>\r\n"
                        b"DATA\r\nFROB\r\nNO\0OP\r\nRSET")
            c.close()
            return 0
        if i % 20 == 5 or i % 40 == 15:
            relay, code = (self.b, 451) if i % 20 == 5 else (self.c, 550)
            c = Client(relay.port)
            self.expect(c.reply(), 220, "greeting")
            self.expect(c.cmd("EHLO soak.test"), 250, "EHLO")
            self.expect(c.cmd("MAIL FROM:<s%d@example.test>" % i), code, "refused MAIL")
            self.expect(c.cmd("QUIT"), 221, "QUIT")
            c.close()
            return 0
        c = Client(self.a.port)
        self.expect(c.reply(), 220, "greeting")
        if i % 2:
            self.expect(c.cmd("EHLO soak.test"), 250, "EHLO")
        self.expect(c.cmd("QUIT"), 221, "QUIT")
        c.close()
        return 0

    def run_mix(self, first, n, rnd):
        delivered = 0
        for i in range(first, first + n):
            try:
                delivered += self.session(i, rnd)
            except (AssertionError, OSError, EOFError) as e:
                raise AssertionError("session %d: %s" % (i, e))
        return delivered

    def steady_fds(self, pid, timeout):
        """The fd count once it has not changed for 0.5 s (bounded)."""
        deadline = time.monotonic() + timeout
        last, since = fd_count(pid), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            n = fd_count(pid)
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= 0.5:
                break
        return last

    def settle(self, pid, want_fds, timeout):
        """Wait until relay25 holds want_fds descriptors; returns the count."""
        deadline = time.monotonic() + timeout
        while True:
            n = fd_count(pid)
            if n <= want_fds or time.monotonic() >= deadline:
                return n
            time.sleep(0.1)

    def test_5000_sessions_no_fd_or_memory_growth(self):
        t0 = time.monotonic()
        esp = self.start_esp()
        esp_refusing = self.start_esp(name="esp-reject-mail", faults=["reject-mail"])
        info = {"log_level": "info"}
        self.a = self.start_relay(upstream_for(esp), server=info)
        self.b = self.start_relay({"host": "localhost", "port": self.refusing_port(),
                                   "tls": "starttls", "username": "u",
                                   "password": "p-not-used", "connect_timeout": "5s"},
                                  server=info)
        self.c = self.start_relay(upstream_for(esp_refusing), server=info)
        self.msg = make_message("soak", size=4000)
        relays = [("A (ESP)", self.a), ("B (closed port)", self.b),
                  ("C (MAIL refused)", self.c)]
        rnd = random.Random(5000)

        delivered = self.run_mix(1, WARMUP, rnd)
        before = {}
        for name, r in relays:
            pid = r.proc.pid
            # the warm-up's last upstream sessions may still be closing
            before[name] = (self.steady_fds(pid, 5.0 * SLOW), rss_kib(pid))

        t1 = time.monotonic()
        delivered += self.run_mix(WARMUP + 1, N, rnd)
        t2 = time.monotonic()

        problems = []
        for name, r in relays:
            pid = r.proc.pid
            fds = self.settle(pid, before[name][0], 10.0 * SLOW)
            rss = rss_kib(pid)
            self.note("%s: fds %d -> %d, VmRSS %d -> %d KiB (%+d)" % (
                name, before[name][0], fds, before[name][1], rss, rss - before[name][1]))
            if fds != before[name][0]:
                import os
                problems.append("%s: %d open fds before, %d after settling: %s" % (
                    name, before[name][0], fds,
                    sorted(os.readlink("/proc/%d/fd/%s" % (pid, f))
                           for f in os.listdir("/proc/%d/fd" % pid))))
            if not (SANITIZE or VALGRIND) and rss - before[name][1] >= RSS_SLACK_KIB:
                problems.append("%s: VmRSS grew by %d KiB over %d sessions" % (
                    name, rss - before[name][1], N))
        self.note("%d sessions in %.1fs (%.0f/s), total test %.1fs, %d delivered" % (
            N, t2 - t1, N / (t2 - t1), time.monotonic() - t0, delivered))
        # every delivered message stored once, nothing from a dropped DATA
        got = esp.wait_messages(delivered, timeout=10)
        self.assertEqual(len(got), delivered)
        self.assertEqual([m for m in got if m.meta["mail_from"].startswith("drop")], [])
        self.assertEqual(esp_refusing.messages(), [])
        self.assertEqual(problems, [])
