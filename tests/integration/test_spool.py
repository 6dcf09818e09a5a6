"""test_spool.py - the durable spool (SPEC 6, include/relay25/spool.h): when
every upstream of the route is unavailable, relay25 accepts the message into
spool_dir (fsync before 250) and delivers it in the background; a 5xx moves
it to failed/; `--spool` lists, `--flush` retries now; crash safety at every
injection point (RELAY25_SPOOL_CRASH) and a real kill -9 mid-DATA; size and
age limits; workers sharing one spool; and the spooling rate with fsync.

Rule checked throughout: anything the client got 250 for is delivered
exactly once (the one documented exception: a crash after the ESP's 250 and
before the unlink, which may deliver it twice); anything else at most once.
"""

import os
import re
import signal
import socket
import statistics
import time
from pathlib import Path

from lib import (PASSWORD, SANITIZE, SLOW, USER, RelayTestCase, certs, crlf,
                 dot_stuff, make_message, refusing_port, relay25_bin, wait_for)

ID_RE = re.compile(r"^[0-9a-f]{14}-[0-9a-f]{4}-[0-9a-f]{8}$")
QUEUED_RE = re.compile(r"queued as ([0-9a-f]{14}-[0-9a-f]{4}-[0-9a-f]{8}) "
                       r"\(spooled")
CRASH_EXIT = 99                 # SPOOL_CRASH_EXIT
SENDER = "app@example.test"
NOTES_DIR = Path("/tmp/relay25-notes")

# spool.h, "Crash injection", in order of occurrence
SPOOLING_POINTS = ["write-partial", "commit-before-fsync", "commit-after-fsync",
                   "commit-after-rename", "commit-after-dirsync"]
DELIVERY_POINTS = ["deliver-after-claim", "deliver-after-250",
                   "deliver-after-unlink", "retry-after-state-tmp",
                   "retry-after-state-rename", "fail-after-state",
                   "fail-after-rename"]


def upstream_at(port, **kw):
    """An [upstream] for the test ESP's STARTTLS listener on port (which
    may not be listening yet)."""
    u = {"host": "localhost", "port": port, "tls": "starttls",
         "ca_file": str(certs() / "ca.pem"), "username": USER,
         "password": PASSWORD, "connect_timeout": "5s"}
    u.update(kw)
    return u


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class FastClient:
    """A minimal blocking SMTP client (no reader thread) for the rate test."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30 * SLOW)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")

    def reply(self):
        lines = []
        while True:
            line = self.f.readline(4096)
            if not line:
                raise AssertionError("connection closed; had %r" % lines)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), b"".join(lines).decode("utf-8", "replace")

    def cmd(self, data):
        self.s.sendall(data)
        return self.reply()

    def close(self):
        try:
            self.f.close()
            self.s.close()
        except OSError:
            pass


class Spool(RelayTestCase):

    # ------------------------------------------------------------ helpers
    def setUp(self):
        super().setUp()
        self.spool = self.tmp / "spool"

    def down_port(self):
        """(socket, port): bound, not listening: connecting is refused. Close
        the socket to hand the port to an ESP (esp_on)."""
        s, port = refusing_port()
        self.addCleanup(s.close)
        return s, port

    def esp_on(self, port, sock=None, **kw):
        """The test ESP on this very port (STARTTLS), after closing the
        refusing socket that held it."""
        if sock is not None:
            sock.close()
        extra = ["--starttls-port", str(port)] + list(kw.pop("extra_args", ()))
        esp = self.start_esp(extra_args=extra, **kw)
        self.assertEqual(esp.port(), port)
        return esp

    def esp_down(self):
        """The test ESP, listening but resetting every connection it accepts
        (faults file "refuse"): relay25 sees the upstream unavailable until
        esp.set_faults([]). (A command-line --fault refuse would never
        listen at all, for the ESP's whole life.)"""
        esp = self.start_esp()
        esp.set_faults(["refuse"])
        return esp

    def spool_relay(self, port, server=None, env=None, spool=None, start=True,
                    extra_ini="", **up_kw):
        srv = {"spool_dir": str(spool or self.spool), "spool_retry_min": "1s",
               "spool_retry_max": "2s"}
        srv.update(server or {})
        return self.start_relay(upstream_at(port, **up_kw), server=srv,
                                env=env, start=start, extra_ini=extra_ini)

    def transaction(self, c, msg, sender=SENDER, rcpts=("rcpt@example.test",),
                    params=""):
        """MAIL, RCPT..., DATA on an open client; sends the message; returns
        the reply to the end of data, or None if the connection dropped."""
        r = c.cmd("MAIL FROM:<%s>%s" % (sender, " " + params if params else ""))
        self.assert_code(r, 250)
        for rc in rcpts:
            self.assert_code(c.cmd("RCPT TO:<%s>" % rc), 250)
        self.assert_code(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        return c.reply_or_eof()

    def send(self, relay, msg, **kw):
        c = self.raw(relay)
        self.greet(c)
        r = self.transaction(c, msg, **kw)
        return c, r

    def assert_spooled(self, r):
        """250 with "queued as <id> (spooled...)"; returns the id."""
        self.assertIsNotNone(r, "connection dropped instead of a reply")
        self.assert_code(r, 250)
        m = QUEUED_RE.search(r.text)
        self.assertTrue(m, "250 does not say the message was spooled: %r" % r)
        return m.group(1)

    def names(self, sub, spool=None):
        d = (spool or self.spool) / sub
        try:
            return sorted(os.listdir(d))
        except FileNotFoundError:
            return []

    def ids(self, sub, spool=None):
        return [n for n in self.names(sub, spool) if ID_RE.match(n)]

    def listing(self, relay):
        """`relay25 --spool`: {"queue": {id: line}, "failed": {id: line}}
        and the section headers' counts."""
        r = relay.run("--spool")
        self.assertEqual(r.returncode, 0, "--spool failed: %s %s" % (r.stdout, r.stderr))
        out = {"queue": {}, "failed": {}, "count": {}, "text": r.stdout}
        section = None
        for line in r.stdout.splitlines():
            m = re.match(r"^(queue|failed): (\d+) message\(s\)", line)
            if m:
                section = m.group(1)
                out["count"][section] = int(m.group(2))
                continue
            word = line.split(" ", 1)[0]
            if ID_RE.match(word):
                self.assertIsNotNone(section, r.stdout)
                out[section][word] = line
        self.assertEqual(set(out["count"]), {"queue", "failed"}, r.stdout)
        for k in ("queue", "failed"):
            self.assertEqual(out["count"][k], len(out[k]), r.stdout)
        return out

    def with_subject(self, esp, subject):
        tag = ("Subject: %s\r\n" % subject).encode()
        return [m for m in esp.messages() if tag in m.data]

    def wait_queue_empty(self, spool=None, timeout=15):
        wait_for(lambda: not self.ids("queue", spool), timeout * SLOW,
                 "an empty spool queue/ (have %s)" % self.names("queue", spool))

    def settle(self, secs=2.5):
        """Long enough for another retry (spool_retry_max = 2s) to happen if
        relay25 were going to deliver something twice."""
        time.sleep(secs * SLOW)

    def wait_crash(self, relay, timeout=20):
        """relay25 must _exit(99) at the injected crash point; the relay is
        then done (no SIGTERM check), sanitizer reports still fail."""
        code = relay.wait_exit(timeout)
        self.assertEqual(code, CRASH_EXIT, "relay25 did not crash at the "
                         "injected point (exit %r):\n%s" % (code, relay.log_text()[-3000:]))
        relay.exit_expected = True
        relay.stopped = True
        relay.proc.logf.close()
        self.assertEqual(relay.sanitizer_reports(), [])

    # ------------------------------------------- 1. upstream down, then up
    def test_upstream_down_then_up_delivered_once(self):
        sock, port = self.down_port()
        relay = self.spool_relay(port)
        body = ["line with 8-bit text: gr\u00fc\u00dfe, \u00e9t\u00e9",
                ".a dot-led line", "..two dots", ".", "trailing space ",
                "", "after an empty line"]
        msg = make_message(subject="spool-down-up", body_lines=body, size=40000)
        rcpts = ["r1@example.test", "r2@example.net", "R3.Mixed@Example.ORG"]
        params = "SIZE=%d BODY=8BITMIME" % len(msg)
        c, r = self.send(relay, msg, rcpts=rcpts, params=params)
        sid = self.assert_spooled(r)
        self.assertEqual(c.cmd("QUIT").code, 221)
        self.assertEqual(self.ids("queue"), [sid])
        self.assertEqual(self.ids("new"), [])
        lst = self.listing(relay)
        self.assertEqual(list(lst["queue"]), [sid], lst["text"])
        self.assertIn("from <%s>" % SENDER, lst["queue"][sid])
        self.assertIn("rcpts 3", lst["queue"][sid])
        self.assertEqual(lst["failed"], {})
        # at least one retry fails while the port refuses
        wait_for(lambda: "attempt 1 failed" in relay.log_text(), 10 * SLOW,
                 "a failed delivery attempt while the ESP is down")
        lst = self.listing(relay)
        self.assertRegex(lst["queue"][sid], r'attempts [1-9].*error ".*refused')

        esp = self.esp_on(port, sock)
        msgs = esp.wait_messages(1, timeout=15)
        self.wait_queue_empty()
        self.settle()
        msgs = esp.messages()
        self.assertEqual(len(msgs), 1, "delivered %d times" % len(msgs))
        m = msgs[0]
        self.assertEqual(crlf(m.data), crlf(msg), "stored bytes differ from what was sent")
        self.assertEqual(m.meta["mail_from"], SENDER)
        self.assertEqual(m.meta["rcpt_tos"], rcpts)
        self.assertEqual(m.meta["mail_options"], ["SIZE=%d" % len(msg), "BODY=8BITMIME"])
        self.assertEqual(self.names("queue"), [], "queue/ not empty (state files?)")
        self.assertEqual(self.names("new"), [])
        self.assertEqual(self.names("failed"), [])
        lst = self.listing(relay)
        self.assertEqual((lst["count"]["queue"], lst["count"]["failed"]), (0, 0))
        log = relay.log_text()
        self.assertRegex(log, r"spool=%s status=sent from=<%s> rcpts=3" % (sid, SENDER))
        self.assertIn("spool: id=%s delivered after" % sid, log)

    def test_null_sender_spooled_and_delivered(self):
        sock, port = self.down_port()
        relay = self.spool_relay(port)
        msg = make_message(subject="spool-null-sender", body_lines=["bounce"])
        c, r = self.send(relay, msg, sender="")
        sid = self.assert_spooled(r)
        self.assertIn("from <>", self.listing(relay)["queue"][sid])
        esp = self.esp_on(port, sock)
        esp.wait_messages(1, timeout=15)
        self.wait_queue_empty()
        self.settle(1.5)
        msgs = esp.messages()
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0].meta["mail_from"], "")
        self.assertEqual(crlf(msgs[0].data), msg)

    def test_spool_events_in_metrics(self):
        """Spooled and delivered messages are counted in /metrics."""
        from test_deploy import http_get, METRICS_INI
        from lib import free_port
        sock, port = self.down_port()
        mport = free_port()
        relay = self.spool_relay(port, extra_ini=METRICS_INI % mport)
        c, r = self.send(relay, make_message(subject="spool-metrics"))
        self.assert_spooled(r)
        st, _, body = http_get(mport, "/metrics")
        self.assertEqual(st, 200)
        self.assertIn('relay25_spool_messages_total{event="spooled"} 1', body)
        esp = self.esp_on(port, sock)
        esp.wait_messages(1, timeout=15)
        self.wait_queue_empty()
        st, _, body = http_get(mport, "/metrics")
        self.assertIn('relay25_spool_messages_total{event="delivered"} 1', body)

    # ---------------------------------------------------- 2. 4xx at MAIL
    def test_tempfail_mail_spooled_then_delivered(self):
        esp = self.start_esp(faults=["tempfail-mail"])
        relay = self.spool_relay(esp.port())
        msg = make_message(subject="spool-4xx-mail", size=3000)
        c, r = self.send(relay, msg, rcpts=["a@example.test", "b@example.test"])
        sid = self.assert_spooled(r)
        c.cmd("QUIT")
        self.assertEqual(self.ids("queue"), [sid])
        # retried and still 451
        wait_for(lambda: re.search(r"id=%s attempt [1-9] failed.*451" % sid,
                                   relay.log_text()), 10 * SLOW,
                 "a retry that got the 451 again")
        lst = self.listing(relay)
        self.assertIn("451 4.3.0", lst["queue"][sid])
        self.assertEqual(esp.messages(), [])
        esp.set_faults([])
        esp.wait_messages(1, timeout=15)
        self.wait_queue_empty()
        self.settle()
        msgs = esp.messages()
        self.assertEqual(len(msgs), 1, "delivered %d times" % len(msgs))
        self.assertEqual(crlf(msgs[0].data), msg)
        self.assertEqual(msgs[0].meta["rcpt_tos"], ["a@example.test", "b@example.test"])
        self.assertEqual(self.names("queue"), [])
        self.assertIn("spool=%s status=sent" % sid, relay.log_text())

    # ------------------------------------------------------ 3. 5xx on retry
    def fail_on_retry(self, fault, reply):
        sock, port = self.down_port()
        relay = self.spool_relay(port)
        msg = make_message(subject="spool-5xx-" + fault, size=2000)
        c, r = self.send(relay, msg)
        sid = self.assert_spooled(r)
        c.cmd("QUIT")
        esp = self.esp_on(port, sock, faults=[fault])
        wait_for(lambda: self.ids("failed") == [sid], 15 * SLOW,
                 "the message in failed/ (have %s)" % self.names("failed"))
        self.wait_queue_empty()
        self.settle()
        self.assertEqual(esp.messages(), [], "a rejected message was stored")
        self.assertEqual(self.names("queue"), [])
        self.assertEqual(self.names("new"), [])
        self.assertEqual(self.names("failed"), [sid, sid + ".state"])
        state = (self.spool / "failed" / (sid + ".state")).read_text()
        self.assertIn("reply " + reply, state)
        lst = self.listing(relay)
        self.assertEqual(lst["queue"], {})
        self.assertEqual(list(lst["failed"]), [sid])
        self.assertIn('reason "%s' % reply, lst["failed"][sid])
        log = relay.log_text()
        self.assertRegex(log, r"spool=%s status=failed .*reply=\"%s" % (sid, re.escape(reply)))
        self.assertRegex(log, r"spool: id=%s failed permanently .*moved to failed/: %s"
                         % (sid, re.escape(reply)))
        # the ESP saw exactly one attempt at this message (not retried after 5xx)
        mails = 0
        for e in esp.conn_log():
            mails += sum(1 for x in e["cmds"] if x.upper().startswith("MAIL"))
        self.assertEqual(mails, 1, esp.conn_log())

    def test_reject_data_moves_to_failed(self):
        self.fail_on_retry("reject-data", "554 5.6.0 Message rejected")

    def test_reject_mail_moves_to_failed(self):
        self.fail_on_retry("reject-mail", "550 5.7.1 Sender rejected")

    # -------------------------------------------------------- 4. --flush
    def test_flush_delivers_a_due_later_message(self):
        esp = self.esp_down()
        relay = self.spool_relay(esp.port(), server={"spool_retry_min": "1h",
                                                     "spool_retry_max": "2h"})
        msg = make_message(subject="spool-flush")
        c, r = self.send(relay, msg)
        sid = self.assert_spooled(r)
        c.cmd("QUIT")
        self.assertRegex(self.listing(relay)["queue"][sid], r"attempts 0 ")
        esp.set_faults([])
        self.assert_nothing_delivered(esp, 2.0 * SLOW)
        r = relay.run("--flush")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("asked the running relay25", r.stdout)
        esp.wait_messages(1, timeout=10)
        self.wait_queue_empty()
        self.settle(1.0)
        self.assertEqual(len(esp.messages()), 1)
        self.assertEqual(crlf(esp.messages()[0].data), msg)
        log = relay.log_text()
        self.assertIn("SIGUSR1: retrying the spool now", log)
        self.assertIn("spool: flush: 1 message(s) due now", log)
        self.assertIn("spool=%s status=sent" % sid, log)

    def test_flush_without_running_relay(self):
        relay = self.spool_relay(self.down_port()[1], start=False)
        r = relay.run("--flush")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--flush", r.stderr)

    # ------------------------------------------- 5. crash safety (spooling)
    def test_crash_while_spooling(self):
        esp = self.esp_down()
        for point in SPOOLING_POINTS:
            with self.subTest(point=point):
                self.crash_while_spooling(esp, point)

    def crash_while_spooling(self, esp, point):
        spool = self.tmp / ("spool-" + point)
        esp.set_faults(["refuse"])
        a = self.spool_relay(esp.port(), spool=spool,
                             env={"RELAY25_SPOOL_CRASH": point})
        subject = "crash-" + point
        msg = make_message(subject=subject, size=5000)
        c, r = self.send(a, msg)
        self.assertIsNone(r, "%s: the client got a reply before the crash: %r" % (point, r))
        self.assertTrue(c.wait_eof(5), "connection not closed")
        self.wait_crash(a)
        committed = point in ("commit-after-rename", "commit-after-dirsync")
        if committed:
            self.assertEqual(len(self.ids("queue", spool)), 1, self.names("queue", spool))
            self.assertEqual(self.names("new", spool), [])
        else:
            self.assertEqual(self.ids("queue", spool), [])
            self.assertEqual(len(self.names("new", spool)), 1, self.names("new", spool))
        queued = self.ids("queue", spool)
        # restart on the same spool with the ESP up
        esp.set_faults([])
        b = self.spool_relay(esp.port(), spool=spool)
        if committed:
            wait_for(lambda: self.with_subject(esp, subject), 10 * SLOW,
                     "%s: the committed message delivered" % point)
        self.wait_queue_empty(spool)
        self.settle()
        got = self.with_subject(esp, subject)
        # no 250: at most once; here the file was in queue/ iff committed
        self.assertLessEqual(len(got), 1, point)
        self.assertEqual(len(got), len(queued), point)
        if got:
            self.assertEqual(crlf(got[0].data), msg)
        self.assertEqual(self.names("new", spool), [], point)
        self.assertEqual(self.names("queue", spool), [], point)
        self.assertEqual(self.names("failed", spool), [], point)
        if not committed:
            self.assertIn("removed 1 unfinished message(s)", b.log_text())
        b.stop()

    # ------------------------------------------- 5. crash safety (delivery)
    def test_crash_while_delivering(self):
        esp = self.esp_down()
        self.crash_counts = {}
        for point in DELIVERY_POINTS:
            with self.subTest(point=point):
                self.crash_while_delivering(esp, point)
        self.note("delivery crash points, deliveries after restart: " +
                  ", ".join("%s=%d" % kv for kv in self.crash_counts.items()))

    def crash_while_delivering(self, esp, point):
        spool = self.tmp / ("spool-" + point)
        esp.set_faults(["refuse"])
        a = self.spool_relay(esp.port(), spool=spool,
                             env={"RELAY25_SPOOL_CRASH": point})
        subject = "dcrash-" + point
        msg = make_message(subject=subject, size=3000)
        c, r = self.send(a, msg)
        sid = self.assert_spooled(r)
        c.cmd("QUIT")
        # what relay25 A meets on its first delivery attempt
        if point.startswith("deliver-"):
            esp.set_faults([])
        elif point.startswith("fail-"):
            esp.set_faults(["reject-data"])
        # retry-*: the ESP still resets connections -> spool_retry()
        self.wait_crash(a)
        before = len(self.with_subject(esp, subject))
        q = set(self.names("queue", spool))
        f = set(self.names("failed", spool))
        expect_before = {"deliver-after-claim": 0, "deliver-after-250": 1,
                         "deliver-after-unlink": 1}.get(point, 0)
        self.assertEqual(before, expect_before, point)
        if point == "deliver-after-unlink":
            self.assertNotIn(sid, q)
        elif point == "retry-after-state-tmp":
            self.assertEqual(q, {sid, sid + ".state.tmp"})
        elif point == "retry-after-state-rename":
            self.assertEqual(q, {sid, sid + ".state"})
            self.assertIn("attempts 1", (spool / "queue" / (sid + ".state")).read_text())
        elif point == "fail-after-state":
            self.assertIn(sid, q)
            self.assertEqual(f, {sid + ".state"})
        elif point == "fail-after-rename":
            self.assertNotIn(sid, q)
            self.assertEqual(f, {sid, sid + ".state"})
        else:
            self.assertIn(sid, q)

        # restart with the ESP accepting everything
        esp.set_faults([])
        b = self.spool_relay(esp.port(), spool=spool)
        if point != "fail-after-rename":
            wait_for(lambda: len(self.with_subject(esp, subject)) > before or
                     not self.ids("queue", spool), 10 * SLOW,
                     "%s: delivery after restart" % point)
        self.wait_queue_empty(spool)
        self.settle()
        n = len(self.with_subject(esp, subject))
        self.crash_counts[point] = n
        if point == "deliver-after-250":
            # the one documented duplicate window
            self.assertIn(n, (1, 2), point)
        elif point == "fail-after-rename":
            # the ESP's 5xx was final: in failed/, never sent again
            self.assertEqual(n, 0, point)
            self.assertEqual(self.ids("failed", spool), [sid])
            self.assertEqual(self.names("failed", spool), [sid, sid + ".state"])
        else:
            self.assertEqual(n, 1, "%s: delivered %d times" % (point, n))
        for m in self.with_subject(esp, subject):
            self.assertEqual(crlf(m.data), msg)
        self.assertEqual(self.names("queue", spool), [], point)
        self.assertEqual(self.names("new", spool), [], point)
        if point != "fail-after-rename":
            # fail-after-state: the stale failed/ID.state is gone too
            self.assertEqual(self.names("failed", spool), [], point)
        b.stop()

    # ---------------------------------------- 5. real kill -9 mid-DATA
    def test_kill9_mid_data(self):
        esp = self.esp_down()
        a = self.spool_relay(esp.port())
        c = self.raw(a)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<%s>" % SENDER), 250)
        self.assert_code(c.cmd("RCPT TO:<r@example.test>"), 250)
        self.assert_code(c.cmd("DATA"), 354)
        msg = make_message(subject="kill9-mid-data", size=400000)
        part = dot_stuff(msg)[:300000]           # no end of data
        c.send(part)

        def written():
            for n in self.names("new"):
                try:
                    if os.stat(self.spool / "new" / n).st_size > 65536:
                        return True
                except FileNotFoundError:
                    pass
            return False
        wait_for(written, 10 * SLOW, "body bytes in new/")
        os.kill(a.proc.pid, signal.SIGKILL)
        self.assertEqual(a.wait_exit(10), -signal.SIGKILL)
        a.exit_expected = True
        a.stopped = True
        a.proc.logf.close()
        self.assertTrue(c.wait_eof(5), "client connection not dropped")
        self.assertNotIn(b"250 2.0.0", c.buf)
        self.assertEqual(len(self.names("new")), 1)
        self.assertEqual(self.ids("queue"), [])
        esp.set_faults([])
        b = self.spool_relay(esp.port())
        self.assertIn("removed 1 unfinished message(s)", b.log_text())
        self.assertEqual(self.names("new"), [])
        self.assert_nothing_delivered(esp, 2.5 * SLOW)
        self.assertEqual(self.names("queue"), [])
        lst = self.listing(b)
        self.assertEqual((lst["count"]["queue"], lst["count"]["failed"]), (0, 0))

    def test_client_drops_mid_data_nothing_left(self):
        esp = self.esp_down()
        relay = self.spool_relay(esp.port())
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<%s>" % SENDER), 250)
        self.assert_code(c.cmd("RCPT TO:<r@example.test>"), 250)
        self.assert_code(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message(size=200000))[:150000])
        wait_for(lambda: self.names("new"), 10 * SLOW, "a file in new/")
        c.close()
        wait_for(lambda: not self.names("new"), 10 * SLOW, "new/ cleaned after the client left")
        esp.set_faults([])
        self.assert_nothing_delivered(esp, 2.0 * SLOW)
        self.assertEqual(self.names("queue"), [])

    # ------------------------------------ shutdown with a delivery in flight
    def test_sigterm_during_delivery_keeps_message(self):
        """SIGTERM while a spooled message is being delivered (the ESP never
        answers the end of data): relay25 exits cleanly (code 0, no
        sanitizer report), the message stays queued, and the next relay25
        delivers it exactly once."""
        esp = self.esp_down()
        a = self.spool_relay(esp.port())
        msg = make_message(subject="sigterm-in-flight", size=5000)
        c, r = self.send(a, msg)
        sid = self.assert_spooled(r)
        c.cmd("QUIT")
        esp.set_faults(["stall-data-reply"])
        wait_for(lambda: "C: <body" in esp.log_text(), 10 * SLOW,
                 "the spooled body at the ESP (stalled before its reply)")
        a.stop()                # AssertionError on exit != 0 / sanitizer reports
        self.assertEqual(self.ids("queue"), [sid])
        self.assertEqual(esp.messages(), [])
        esp.set_faults([])
        b = self.spool_relay(esp.port())
        esp.wait_messages(1, timeout=15)
        self.wait_queue_empty()
        self.settle(1.5)
        self.assertEqual(len(esp.messages()), 1)
        self.assertEqual(crlf(esp.messages()[0].data), msg)
        b.stop()

    # ------------------------------------------ recipients refused at retry
    def test_one_recipient_refused_on_delivery(self):
        """A spooled message whose delivery gets 550 for one of its
        recipients: the others get it once; the refused one is logged."""
        sock, port = self.down_port()
        relay = self.spool_relay(port)
        msg = make_message(subject="spool-partial-rcpt")
        c, r = self.send(relay, msg, rcpts=["ok1@example.test", "nobody@example.test",
                                            "ok2@example.test"])
        sid = self.assert_spooled(r)
        c.cmd("QUIT")
        esp = self.esp_on(port, sock, reject_rcpt=["nobody@example.test"])
        esp.wait_messages(1, timeout=15)
        self.wait_queue_empty()
        self.settle()
        msgs = esp.messages()
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0].meta["rcpt_tos"], ["ok1@example.test", "ok2@example.test"])
        self.assertRegex(relay.log_text(), r"spool=%s recipient <nobody@example.test> "
                         r"refused: 550" % sid)
        self.note("refused recipient after a 250 from the spool: logged only; "
                  "failed/ holds %s" % (self.names("failed") or "nothing"))

    # ------------------------------------------------------- 6. limits
    def test_max_size_refuses_big_message(self):
        sock, port = self.down_port()
        relay = self.spool_relay(port, server={"spool_max_size": "2K"})
        big = make_message(subject="spool-too-big", size=10000)
        c, r = self.send(relay, big)
        self.assertIsNotNone(r)
        self.assert_code(r, 451, "4.3.1")
        self.assertEqual(self.names("queue"), [])
        self.assertEqual(self.names("new"), [])
        # the session goes on; a small message still fits
        small = make_message(subject="spool-small", body_lines=["hi"])
        r = self.transaction(c, small)
        sid = self.assert_spooled(r)
        self.assertEqual(self.ids("queue"), [sid])
        lst = self.listing(relay)
        self.assertEqual(list(lst["queue"]), [sid])
        self.assertRegex(relay.log_text(), r"status=deferred .*spool is full")
        esp = self.esp_on(port, sock)
        esp.wait_messages(1, timeout=15)
        self.wait_queue_empty()
        self.settle(1.5)
        self.assertEqual([crlf(m.data) for m in esp.messages()], [small])

    def test_max_size_refuses_at_data_when_full(self):
        sock, port = self.down_port()
        relay = self.spool_relay(port, server={"spool_max_size": "2K"})
        first = make_message(subject="spool-fill", size=1500)
        c, r = self.send(relay, first)
        sid = self.assert_spooled(r)
        # the next one does not fit: 451 (at DATA or at the end), never 250
        r = c.cmd("MAIL FROM:<%s>" % SENDER)
        self.assert_code(r, 250)
        self.assert_code(c.cmd("RCPT TO:<r@example.test>"), 250)
        r = c.cmd("DATA")
        if r.code == 354:
            c.send(dot_stuff(make_message(subject="spool-over", size=1500)))
            r = c.reply()
        self.assert_code(r, 451)
        self.assertEqual(self.ids("queue"), [sid])
        self.assertEqual(self.names("new"), [])

    def test_max_age_expires_to_failed(self):
        sock, port = self.down_port()
        relay = self.spool_relay(port, server={"spool_max_age": "3s"})
        c, r = self.send(relay, make_message(subject="spool-expire"))
        sid = self.assert_spooled(r)
        c.cmd("QUIT")
        wait_for(lambda: self.ids("failed") == [sid], 15 * SLOW,
                 "the expired message in failed/")
        self.wait_queue_empty()
        self.assertEqual(self.names("queue"), [])
        state = (self.spool / "failed" / (sid + ".state")).read_text()
        self.assertRegex(state, r"reply expired: last error: .*refused")
        lst = self.listing(relay)
        self.assertEqual(lst["queue"], {})
        self.assertRegex(lst["failed"][sid], r'reason "expired')
        self.assertIn("spool: id=%s expired after" % sid, relay.log_text())
        # and it is not delivered when the ESP comes up
        esp = self.esp_on(port, sock)
        self.assert_nothing_delivered(esp, 2.5 * SLOW)

    # ------------------------------------------------------- 7. workers
    def test_workers_deliver_each_once(self):
        esp = self.esp_down()
        relay = self.spool_relay(esp.port(), server={"workers": "2"})
        wait_for(lambda: len(children(relay.proc.pid)) == 2, 5 * SLOW, "two workers")
        n = 8
        sent = {}
        for i in range(n):
            subj = "workers-live-%d" % i
            c, r = self.send(relay, make_message(subject=subj))
            sent[subj] = self.assert_spooled(r)
            c.cmd("QUIT")
            c.close()
        self.assertEqual(sorted(self.ids("queue")), sorted(sent.values()))
        esp.set_faults([])
        esp.wait_messages(n, timeout=20)
        self.wait_queue_empty()
        self.settle(3.0)
        for subj in sent:
            self.assertEqual(len(self.with_subject(esp, subj)), 1, subj)
        self.assertEqual(len(esp.messages()), n)
        self.assertEqual(self.names("queue"), [])

    def test_workers_restart_on_shared_queue_each_once(self):
        """Every worker indexes the whole queue at start and races for
        each message: the flock claim must deliver each exactly once."""
        sock, port = self.down_port()
        a = self.spool_relay(port)
        n = 10
        sent = {}
        for i in range(n):
            subj = "workers-restart-%d" % i
            c, r = self.send(a, make_message(subject=subj))
            sent[subj] = self.assert_spooled(r)
            c.cmd("QUIT")
            c.close()
        a.stop()
        self.assertEqual(sorted(self.ids("queue")), sorted(sent.values()))
        esp = self.esp_on(port, sock)
        b = self.spool_relay(port, server={"workers": "2"})
        wait_for(lambda: len(children(b.proc.pid)) == 2, 5 * SLOW, "two workers")
        esp.wait_messages(n, timeout=20)
        self.wait_queue_empty()
        self.settle(6.0)        # past SPOOL_BUSY_DELAY (5s): the loser looks again
        for subj in sent:
            self.assertEqual(len(self.with_subject(esp, subj)), 1, subj)
        self.assertEqual(len(esp.messages()), n)
        self.assertEqual(self.names("queue"), [])
        b.stop()

    def test_workers_flush(self):
        esp = self.esp_down()
        relay = self.spool_relay(esp.port(), server={
            "workers": "2", "spool_retry_min": "1h", "spool_retry_max": "2h"})
        wait_for(lambda: len(children(relay.proc.pid)) == 2, 5 * SLOW, "two workers")
        c, r = self.send(relay, make_message(subject="workers-flush"))
        self.assert_spooled(r)
        c.cmd("QUIT")
        esp.set_faults([])
        self.assert_nothing_delivered(esp, 1.5 * SLOW)
        r = relay.run("--flush")
        self.assertEqual(r.returncode, 0, r.stderr)
        esp.wait_messages(1, timeout=10)
        self.wait_queue_empty()
        self.settle(2.0)
        self.assertEqual(len(esp.messages()), 1)
        self.assertEqual(len(children(relay.proc.pid)), 2, "a worker died (SIGUSR1?)")

    # ------------------------------------------------------- 8. rate
    def spool_one(self, fc, msg, i):
        code, text = fc.cmd(b"MAIL FROM:<%s>\r\n" % SENDER.encode())
        self.assertEqual(code, 250, text)
        code, text = fc.cmd(b"RCPT TO:<r%d@example.test>\r\n" % i)
        self.assertEqual(code, 250, text)
        code, text = fc.cmd(b"DATA\r\n")
        self.assertEqual(code, 354, text)
        code, text = fc.cmd(dot_stuff(msg))
        self.assertEqual(code, 250, text)
        self.assertIn("(spooled", text)

    def test_spool_rate(self):
        sock, port = self.down_port()
        relay = self.spool_relay(port, server={"spool_retry_min": "1h",
                                               "spool_retry_max": "2h",
                                               "log_level": "info"})
        msg = make_message(subject="rate", size=1024)
        self.assertLess(abs(len(msg) - 1024), 100)
        n, rounds = 200, 5
        res = {"session per message": [], "one session": []}
        lat = {"session per message": [], "one session": []}
        total = 0
        for rnd in range(rounds):
            # one SMTP session per message
            t0 = time.perf_counter()
            for i in range(n):
                t1 = time.perf_counter()
                fc = FastClient(relay.port)
                try:
                    self.assertEqual(fc.reply()[0], 220)
                    self.assertEqual(fc.cmd(b"EHLO client.test\r\n")[0], 250)
                    self.spool_one(fc, msg, i)
                    self.assertEqual(fc.cmd(b"QUIT\r\n")[0], 221)
                finally:
                    fc.close()
                lat["session per message"].append(time.perf_counter() - t1)
            res["session per message"].append(n / (time.perf_counter() - t0))
            total += n
            # one session, n messages
            fc = FastClient(relay.port)
            try:
                self.assertEqual(fc.reply()[0], 220)
                self.assertEqual(fc.cmd(b"EHLO client.test\r\n")[0], 250)
                t0 = time.perf_counter()
                for i in range(n):
                    t1 = time.perf_counter()
                    self.spool_one(fc, msg, i)
                    lat["one session"].append(time.perf_counter() - t1)
                res["one session"].append(n / (time.perf_counter() - t0))
                self.assertEqual(fc.cmd(b"QUIT\r\n")[0], 221)
            finally:
                fc.close()
            total += n
        self.assertEqual(len(self.ids("queue")), total)
        lst = self.listing(relay)
        self.assertEqual(lst["count"]["queue"], total)
        fs = "?"
        best = ""
        with open("/proc/mounts") as f:       # the spool's file system
            for line in f:
                dev, mnt, typ = line.split()[:3]
                if str(self.spool).startswith(mnt) and len(mnt) > len(best):
                    best, fs = mnt, "%s (%s on %s)" % (typ, dev, mnt)
        label = "SANITIZE=1 (%s)" % relay25_bin() if SANITIZE else relay25_bin()
        lines = ["## %s" % label, "",
                 "%d x %d-byte messages into the spool (fsync + rename + dir "
                 "fsync per message), upstream refusing, %d rounds each, "
                 "spool on %s, file system %s, %d CPU(s), %s" % (
                     n, len(msg), rounds, self.spool, fs, os.cpu_count(),
                     time.strftime("%Y-%m-%d %H:%M:%S")), ""]
        for mode in res:
            med = statistics.median(res[mode])
            lines.append("- %s: median %.0f msg/s (rounds: %s); per-message "
                         "latency median %.2f ms, p95 %.2f ms" % (
                             mode, med, ", ".join("%.0f" % x for x in res[mode]),
                             1000 * statistics.median(lat[mode]),
                             1000 * sorted(lat[mode])[int(0.95 * len(lat[mode]))]))
            self.note("spool rate, %s: median %.0f msg/s (%s)" % (
                mode, med, ", ".join("%.0f" % x for x in res[mode])))
        self.write_rate_notes(label, "\n".join(lines) + "\n")

    def write_rate_notes(self, label, section):
        NOTES_DIR.mkdir(parents=True, exist_ok=True)
        path = NOTES_DIR / "spool-rate.md"
        head = ("# relay25 spool rate (tests/integration/test_spool.py test_spool_rate)\n\n"
                "Each section is rewritten by the latest run of its build. The rate is\n"
                "bound by fdatasync + directory fsync latency: on a shared VM disk it\n"
                "varies by up to 2x between runs, so compare medians, not rounds.\n\n")
        sections = {}
        if path.exists():
            cur = None
            for line in path.read_text().splitlines(keepends=True):
                if line.startswith("## "):
                    cur = line[3:].strip()
                    sections[cur] = ""
                if cur is not None:
                    sections[cur] += line
        sections[label] = section + "\n"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(head + "".join(sections[k] for k in sorted(sections)))
        os.replace(tmp, path)
