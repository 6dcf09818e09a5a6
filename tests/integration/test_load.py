"""test_load.py - concurrency, PIPELINING under any segmentation, and a big
message streamed in bounded memory (SPEC 1.4, 2, 5)."""

import hashlib
import socket
import threading
import time

from lib import (CLIENT_NAME, SANITIZE, VALGRIND, RelayTestCase, crlf,
                 dot_stuff, make_message, upstream_for)

RSS_LIMIT_KIB = 16 * 1024


class Load(RelayTestCase):

    def test_20_concurrent_clients(self):
        esp, relay = self.esp_and_relay()
        nclients, per_client = 20, 5
        barrier = threading.Barrier(nclients, timeout=60)
        errors = []
        sent = {}

        def client(i):
            try:
                import smtplib
                barrier.wait()
                s = smtplib.SMTP("127.0.0.1", relay.port, local_hostname=CLIENT_NAME,
                                 timeout=60)
                try:
                    for j in range(per_client):
                        subj = "client %02d message %d" % (i, j)
                        msg = make_message(subj, body_lines=["from client %d" % i] * 20)
                        sent[subj] = msg
                        s.sendmail("c%d@example.test" % i, ["r%d.%d@example.test" % (i, j)], msg)
                    s.quit()
                finally:
                    s.close()
            except Exception as e:
                errors.append("client %d: %r" % (i, e))

        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(nclients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        dt = time.monotonic() - t0
        self.assertEqual(errors, [])
        total = nclients * per_client
        got = esp.wait_messages(total, 30)
        self.assertEqual(len(got), total)
        by_subject = {}
        for m in got:
            subj = [l for l in m.data.split(b"\r\n") if l.startswith(b"Subject: ")][0][9:]
            by_subject[subj.decode()] = m
        self.assertEqual(set(by_subject), set(sent))
        for subj, m in by_subject.items():
            self.assertEqual(crlf(m.data), sent[subj])
            i, j = int(subj.split()[1]), int(subj.split()[3])
            self.assertEqual(m.meta["rcpt_tos"], ["r%d.%d@example.test" % (i, j)])
        rate = total / dt
        self.note("%d clients x %d messages: %d messages in %.2fs = %.1f messages/s"
                  % (nclients, per_client, total, dt, rate))

    def pipelined_session(self, bytewise):
        esp, relay = self.esp_and_relay()
        msg = make_message("pipelined %s" % ("one byte at a time" if bytewise else "in one write"),
                           body_lines=[".dot", "line", "..", "."])
        seq = (b"EHLO " + CLIENT_NAME.encode() + b"\r\n"
               b"MAIL FROM:<pipe@example.test>\r\n"
               b"RCPT TO:<a@example.test>\r\n"
               b"RCPT TO:<b@example.test>\r\n"
               b"DATA\r\n" + dot_stuff(msg) +
               b"NOOP\r\nQUIT\r\n")
        c = self.raw(relay)
        self.assertEqual(c.reply().code, 220)   # never talk before the greeting
        t0 = time.monotonic()
        if bytewise:
            c.send_bytewise(seq)
        else:
            c.send(seq)
        replies = [c.reply() for _ in range(8)]
        codes = [r.code for r in replies]
        self.assertEqual(codes, [250, 250, 250, 250, 354, 250, 250, 221], replies)
        self.assertTrue(len(replies[0].lines) > 1, "EHLO reply should be multi-line")
        self.assertTrue(c.wait_eof(10), "connection not closed after QUIT")
        m = esp.wait_messages(1)[0]
        self.assertEqual(crlf(m.data), msg)
        self.assertEqual(m.meta["mail_from"], "pipe@example.test")
        self.assertEqual(m.meta["rcpt_tos"], ["a@example.test", "b@example.test"])
        self.assertIn(m.meta["queue_id"], replies[5].text)
        self.note("%d bytes %s, session took %.2fs" % (
            len(seq), "one byte per send" if bytewise else "in one send",
            time.monotonic() - t0))

    def test_pipelined_one_byte_at_a_time(self):
        self.pipelined_session(bytewise=True)

    def test_pipelined_all_in_one_write(self):
        self.pipelined_session(bytewise=False)

    def rss_check(self, relay, what):
        hwm = relay.vmhwm_kib()
        note = "relay25 VmHWM after %s: %.1f MiB" % (what.strip(), hwm / 1024)
        if SANITIZE or VALGRIND:
            self.note(note + " (not checked under sanitizers/valgrind)")
            return
        self.note(note + " (limit %d MiB)" % (RSS_LIMIT_KIB // 1024))
        self.assertLess(hwm, RSS_LIMIT_KIB, note)

    def big_message(self, size, esp_faults=(), what=""):
        esp = self.start_esp(faults=list(esp_faults))
        relay = self.start_relay(upstream_for(esp))
        msg = make_message("big", size=size)
        digest = hashlib.sha256(msg).hexdigest()
        s = self.smtp(relay, timeout=120)
        t0 = time.monotonic()
        s.sendmail("big@example.test", ["r@example.test"], msg)
        dt = time.monotonic() - t0
        s.quit()
        m = esp.wait_messages(1, 30)[0]
        self.assertEqual(m.meta["size"], len(msg))
        self.assertEqual(m.meta["sha256"], digest)
        self.assertEqual(hashlib.sha256(m.data).hexdigest(), digest)
        self.note("%.1f MiB %sin %.2fs (%.1f MiB/s)" % (
            len(msg) / 1048576, what, dt, len(msg) / 1048576 / dt))
        self.rss_check(relay, ("%.0f MiB message " % (len(msg) / 1048576)) + what.strip())

    def test_20mib_message_intact_bounded_memory(self):
        self.big_message(20 * 1024 * 1024)

    def test_back_pressure_slow_upstream(self):
        # the ESP reads at ~4 MB/s: relay25 must stop reading from the
        # client rather than buffer the message
        self.big_message(8 * 1024 * 1024, esp_faults=["slow-data:4000000"],
                         what="to a slow upstream ")
