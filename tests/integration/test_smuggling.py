"""test_smuggling.py - SMTP smuggling and hostile client input end to end
(SPEC 2): raw sockets in front of relay25, the test ESP behind it.

Smuggling: for every published end-of-data confusion (SEC Consult, 2023) a
client sends ONE DATA whose body holds the fake end followed by a whole
second transaction, then the real CRLF.CRLF. relay25 must deliver exactly
one message, with the original envelope, the smuggled text as content, and
nothing the upstream could take as an end of data:
  - against the ESP with RFC 5321 framing (strict),
  - against the ESP with --eod lenient (LF.LF, LF.CRLF, CRLF.LF also end
    the data there): the real attack, relay25 protecting a lenient upstream,
  - with bare_lf = reject: a message holding a bare CR or LF gets 5xx and
    nothing is delivered (the NUL-only vectors are delivered normally).

What the ESP stores is the message after its own un-dot-stuffing. relay25
keeps a line that is exactly "." (made of a bare CR/LF or a removed NUL) as
content by sending it stuffed (".."), so the stored message holds that "."
line as text; the tests check the stored bytes exactly against the
normalised body (NUL removed, bare CR and bare LF -> CRLF) and that the ESP
never received the smuggled commands as commands (conn.log).

Hostile input: talking before the greeting, NUL in a command, a 10 000-byte
command line, 21 bad commands, commands after QUIT, 1 MiB of random bytes,
5 000 RCPT, SIZE= over the limit and streaming over the limit.
"""

import os
import random
import signal
import socket
import threading
import time

from lib import (SLOW, RelayTestCase, crlf, dot_stuff, make_message, upstream_for,
                 wait_for)

HONEST_FROM = "honest@example.test"
HONEST_RCPT = "rcpt@example.test"
SMUGGLED = (b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\n"
            b"smuggled\r\n")

# name -> fake end of data
VECTORS = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "crlf_dot_lf": b"\r\n.\n",
    "cr_dot_cr": b"\r.\r",
    "crlf_dot_cr": b"\r\n.\r",
    "crlf_nul_dot_crlf": b"\r\n\x00.\r\n",
    "crlf_dot_nul_crlf": b"\r\n.\x00\r\n",
    "cr_dot_crlf": b"\r.\r\n",
    "lf_dot_cr": b"\n.\r",
}


def normalised(body):
    """What an RFC 5321 upstream must store for body (raw DATA bytes before
    the final CRLF.CRLF) if relay25 behaves as SPEC 2 says: NUL bytes
    removed, every bare CR and bare LF a CRLF, no dot-stuffing in body."""
    return crlf(body.replace(b"\0", b""))


def has_bare_eol(body):
    b = body.replace(b"\r\n", b"")
    return b"\r" in b or b"\n" in b


class Smuggling(RelayTestCase):

    def setup_pair(self, eod="strict", server=None):
        esp = self.start_esp(extra_args=["--eod", eod])
        relay = self.start_relay(upstream_for(esp), server=server)
        return esp, relay

    def open_data(self, relay, mail=HONEST_FROM, rcpt=HONEST_RCPT):
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<%s>" % mail), 250)
        self.assert_code(c.cmd("RCPT TO:<%s>" % rcpt), 250)
        self.assert_code(c.cmd("DATA"), 354)
        return c

    def replies_until_eof(self, c, timeout):
        """Every reply until the server closes (bounded)."""
        out = []
        deadline = time.monotonic() + timeout * SLOW
        while True:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "server did not close; replies so far %r" % out)
            r = c.reply_or_eof(timeout=left)
            if r is None:
                return out
            out.append(r)

    def wait_upstream_done(self, esp, min_conns=1):
        """Wait (bounded) until min_conns ESP connections that got a MAIL
        have ended, so everything relay25 sent upstream has been seen."""
        def done():
            got = [e for e in esp.conn_log()
                   if any(x.upper().startswith("MAIL") for x in e["cmds"])]
            return got if len(got) >= min_conns else None
        return wait_for(done, 15 * SLOW, "relay25's upstream session(s) to end")

    def assert_no_smuggled_commands(self, esp):
        for e in esp.conn_log():
            bad = [x for x in e["cmds"] if "evil@x" in x or "victim@y" in x
                   or x.lower() == "smuggled"]
            self.assertEqual(bad, [], "the ESP received smuggled commands: %r" % e)

    def smuggle(self, vector, eod):
        esp, relay = self.setup_pair(eod)
        c = self.open_data(relay)
        body = b"Subject: smuggling test\r\n\r\nbefore" + vector + SMUGGLED
        c.send(body + b"\r\n.\r\n")
        r = c.reply()
        self.assert_code(r, 250)
        c.send(b"QUIT\r\n")
        rest = self.replies_until_eof(c, 10)
        self.assertEqual([x.code for x in rest], [221],
                         "after the one 250 for DATA: %r" % rest)
        self.wait_upstream_done(esp)
        time.sleep(0.5 * SLOW)      # a second message would be there by now
        got = esp.messages()
        self.assertEqual(len(got), 1, "the ESP stored %d messages: %r" % (len(got), got))
        m = got[0]
        self.assertEqual(m.meta["mail_from"], HONEST_FROM)
        self.assertEqual(m.meta["rcpt_tos"], [HONEST_RCPT])
        self.assertEqual((m.meta["bare_lf"], m.meta["bare_cr"], m.meta["nul"]), (0, 0, 0),
                         "bare CR/LF or NUL reached the upstream")
        self.assertIn(b"\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\n"
                      b"smuggled\r\n", m.data, "smuggled text not delivered as content")
        self.assertEqual(m.data, normalised(body + b"\r\n"))
        self.assert_no_smuggled_commands(esp)
        for e in esp.conn_log():
            self.assertLessEqual(e["msgs"], 1, e)

    def reject_bare(self, vector):
        esp, relay = self.setup_pair("lenient", server={"bare_lf": "reject"})
        c = self.open_data(relay)
        body = b"Subject: smuggling test\r\n\r\nbefore" + vector + SMUGGLED
        c.send(body + b"\r\n.\r\n")
        r = c.reply()
        if has_bare_eol(vector):
            self.assert_code(r, "5xx")
            c.send(b"QUIT\r\n")
            rest = self.replies_until_eof(c, 10)
            self.assertEqual([x.code for x in rest], [221], rest)
            self.assert_nothing_delivered(esp, 1.0 * SLOW)
        else:
            # NUL only: removed, the message is delivered
            self.assert_code(r, 250)
            c.send(b"QUIT\r\n")
            rest = self.replies_until_eof(c, 10)
            self.assertEqual([x.code for x in rest], [221], rest)
            self.wait_upstream_done(esp)
            time.sleep(0.5 * SLOW)
            got = esp.messages()
            self.assertEqual(len(got), 1, got)
            self.assertEqual(got[0].data, normalised(body + b"\r\n"))
        self.assert_no_smuggled_commands(esp)


def _add(name, fn):
    fn.__name__ = name
    setattr(Smuggling, name, fn)


for _n, _v in VECTORS.items():
    _add("test_smuggle_%s_strict" % _n, lambda self, v=_v: self.smuggle(v, "strict"))
    _add("test_smuggle_%s_lenient_upstream" % _n,
         lambda self, v=_v: self.smuggle(v, "lenient"))
    _add("test_smuggle_%s_bare_lf_reject" % _n, lambda self, v=_v: self.reject_bare(v))


class HostileInput(RelayTestCase):

    def pair(self, server=None):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), server=server)
        return esp, relay

    def deliver(self, c, esp, subject, n_before=0):
        """One more transaction on greeted client c; the ESP stores it."""
        self.assert_code(c.cmd("MAIL FROM:<s@example.test>"), 250)
        self.assert_code(c.cmd("RCPT TO:<r@example.test>"), 250)
        self.assert_code(c.cmd("DATA"), 354)
        msg = make_message(subject)
        c.send(dot_stuff(msg))
        self.assert_code(c.reply(), 250)
        got = esp.wait_messages(n_before + 1)
        self.assertEqual(got[n_before].data, msg)

    def test_early_talker_554_and_closed(self):
        """Bytes before the greeting: 554 and closed. Deterministic: relay25
        is stopped (SIGSTOP, by PID) while the client connects and talks, so
        the bytes are queued before relay25 can accept and greet."""
        esp, relay = self.pair()
        pid = relay.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            self.addCleanup(s.close)
            s.sendall(b"EHLO early.test\r\nMAIL FROM:<early@example.test>\r\n")
        finally:
            os.kill(pid, signal.SIGCONT)
        s.settimeout(10 * SLOW)
        data = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        lines = data.decode("utf-8", "replace").splitlines()
        self.assertTrue(lines, "closed without any reply")
        self.assertTrue(lines[0].startswith("554"), "first reply %r (all: %r)" % (lines[0], lines))
        self.assertFalse(any(l.startswith("220") for l in lines), lines)
        self.assertEqual(len(lines), 1, lines)
        wait_for(lambda: "talked before the greeting" in relay.log_text(), 5 * SLOW,
                 "relay25's log line about the early talker")
        # relay25 goes on serving
        c = self.raw(relay)
        self.greet(c)
        self.deliver(c, esp, "after an early talker")
        conns = [e for e in esp.conn_log() if any("early@" in x for x in e["cmds"])]
        self.assertEqual(conns, [], "the early talker's MAIL reached the ESP")

    def test_nul_in_command_500(self):
        esp, relay = self.pair()
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("NO\0OP"), 500)
        self.assert_code(c.cmd("MAIL FROM:<a\0b@example.test>"), 500)
        self.assert_code(c.cmd("NOOP"), 250)
        self.deliver(c, esp, "after NUL commands")

    def test_10000_byte_command_line_500_552_session_usable(self):
        esp, relay = self.pair()
        c = self.raw(relay)
        self.greet(c)
        c.send(b"NOOP " + b"x" * 9995 + b"\r\n")
        self.assert_code(c.reply(), 500, "5.5.2")
        # exactly one reply for the long line: the next one is NOOP's
        self.assert_code(c.cmd("NOOP"), 250)
        c.send(b"MAIL FROM:<" + b"a" * 9990 + b"@example.test>\r\n")
        self.assert_code(c.reply(), 500, "5.5.2")
        self.assert_code(c.cmd("NOOP"), 250)
        self.deliver(c, esp, "after a 10000-byte line")

    def test_21_bad_commands_421_and_closed(self):
        esp, relay = self.pair()
        c = self.raw(relay)
        self.greet(c)
        c.send(b"".join(b"BOGUS%d\r\n" % i for i in range(21)))
        rest = []
        deadline = time.monotonic() + 15 * SLOW
        while time.monotonic() < deadline:
            r = c.reply_or_eof(timeout=10 * SLOW)
            if r is None:
                break
            rest.append(r)
        codes = [(r.code, r.text[:5]) for r in rest]
        self.assertEqual(codes, [(500, "5.5.1")] * 20 + [(421, "4.7.0")], codes)
        self.assertTrue(c.wait_eof(5), "not closed after 421")

    def test_commands_after_quit_ignored(self):
        esp, relay = self.pair()
        c = self.raw(relay)
        self.greet(c)
        c.send(b"QUIT\r\nNOOP\r\nMAIL FROM:<after-quit@example.test>\r\n"
               b"RCPT TO:<r@example.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n")
        replies = []
        while True:
            r = c.reply_or_eof(timeout=10 * SLOW)
            if r is None:
                break
            replies.append(r)
        self.assertEqual([r.code for r in replies], [221], replies)
        time.sleep(0.5 * SLOW)
        self.assertEqual(esp.messages(), [])
        for e in esp.conn_log():
            self.assertFalse([x for x in e["cmds"] if "after-quit" in x], e)

    def test_1mib_random_commands_then_normal_session(self):
        esp, relay = self.pair()
        junk = random.Random(20231218).randbytes(1 << 20)
        c = self.raw(relay)
        self.assert_code(c.reply(), 220)
        sent = {"err": None}

        def blast():
            try:
                c.sock.sendall(junk)
            except OSError as e:      # relay25 closed: fine
                sent["err"] = e
        t = threading.Thread(target=blast, daemon=True)
        t.start()
        replies = []
        while True:
            r = c.reply_or_eof(timeout=30 * SLOW)
            if r is None:
                break
            replies.append(r)
        t.join(30 * SLOW)
        self.assertFalse(t.is_alive(), "sending 1 MiB did not finish or fail")
        self.assertTrue(c.eof)
        self.assertTrue(replies, "closed without a reply")
        self.assertTrue(all(r.code >= 400 for r in replies),
                        "non-error replies to random bytes: %r" %
                        [r for r in replies if r.code < 400][:5])
        self.note("random bytes: %d replies, last %r, sender: %r" % (
            len(replies), replies[-1].lines[-1][:40], sent["err"]))
        self.assertTrue(relay.proc.alive(), "relay25 died")
        c2 = self.raw(relay)
        self.greet(c2)
        self.deliver(c2, esp, "after random bytes")
        self.assertEqual(c2.cmd("QUIT").code, 221)

    def test_5000_rcpt_exactly_100_accepted(self):
        esp, relay = self.pair(server={"max_recipients": "100"})
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<s@example.test>"), 250)
        c.send(b"".join(b"RCPT TO:<r%04d@example.test>\r\n" % i for i in range(5000)))
        replies = [c.reply() for _ in range(5000)]
        codes = [r.code for r in replies]
        self.assertEqual(codes[:100], [250] * 100, codes[:100])
        self.assert_code(replies[100], 452, "4.5.3")
        bad = [(i, r) for i, r in enumerate(replies[100:], 100)
               if r.code != 452 or not r.text.startswith("4.5.3")]
        self.assertEqual(bad[:3], [], "%d RCPTs after the 100th not 452 4.5.3" % len(bad))
        self.assert_code(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message("5000 rcpts")))
        self.assert_code(c.reply(), 250)
        m = esp.wait_messages(1)[0]
        self.assertEqual(m.meta["rcpt_tos"], ["r%04d@example.test" % i for i in range(100)])
        self.assertEqual(c.cmd("QUIT").code, 221)

    def test_size_parameter_over_limit_552(self):
        esp, relay = self.pair(server={"max_message_size": "16K"})
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<s@example.test> SIZE=16385"), 552, "5.3.4")
        self.assert_code(c.cmd("MAIL FROM:<s@example.test> SIZE=100000000000"), 552, "5.3.4")
        self.assert_code(c.cmd("MAIL FROM:<s@example.test> SIZE=16384"), 250)
        self.assert_code(c.cmd("RSET"), 250)
        self.deliver(c, esp, "after SIZE refused")

    def test_streaming_over_limit_552_nothing_delivered(self):
        esp, relay = self.pair(server={"max_message_size": "16K"})
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<big@example.test>"), 250)
        self.assert_code(c.cmd("RCPT TO:<r@example.test>"), 250)
        self.assert_code(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message("too big", size=200 * 1024)))
        self.assert_code(c.reply(), 552, "5.3.4")
        # the upstream transaction was aborted: its connection ends without
        # a message, and nothing truncated is ever stored
        def big_conn_ended():
            return [e for e in esp.conn_log() if any("big@" in x for x in e["cmds"])]
        ended = wait_for(big_conn_ended, 15 * SLOW, "the oversize upstream session to end")
        self.assertEqual([e["msgs"] for e in ended], [0], ended)
        self.assert_nothing_delivered(esp, 0.5 * SLOW)
        # the session goes on
        self.deliver(c, esp, "small after big")
        self.assertEqual(len(esp.messages()), 1)
        self.assertEqual(c.cmd("QUIT").code, 221)
