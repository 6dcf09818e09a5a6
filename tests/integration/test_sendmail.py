"""test_sendmail.py - relay25-sendmail, the sendmail(8) front door (issue 6):
legacy programs pipe a message to it and it submits it to a real relay25,
which forwards it to the test ESP. Cron-style and mail(1)-style calls,
PHP's `sendmail -t -i`, Bcc, lone-dot lines with and without -i, LF to
CRLF, 8-bit bodies, -bs, RELAY25_SUBMIT, and the exit codes a caller acts
on (sysexits.h: 75 = try again, 69 = rejected, 65/64 = its own mistake).

The binary: RELAY25_SENDMAIL_BIN, else relay25-sendmail beside relay25.
Every run is bounded by a timeout; nothing else is started."""

import os
import shutil
import socket
import subprocess
import time

from lib import RelayTestCase, SLOW, relay25_bin

EX_USAGE, EX_DATAERR, EX_UNAVAILABLE, EX_IOERR, EX_TEMPFAIL, EX_CONFIG = \
    64, 65, 69, 74, 75, 78
LOGIN = "tester"
HOST = socket.gethostname()


def sendmail_bin():
    b = os.environ.get("RELAY25_SENDMAIL_BIN")
    if b:
        return os.path.abspath(b)
    return os.path.join(os.path.dirname(relay25_bin()), "relay25-sendmail")


class Sendmail(RelayTestCase):

    def setUp(self):
        super().setUp()
        self.bin = sendmail_bin()
        if not os.access(self.bin, os.X_OK):
            if os.environ.get("RELAY25_SENDMAIL_BIN") or os.environ.get("RELAY25_BIN"):
                raise AssertionError("relay25-sendmail not built: %s" % self.bin)
            self.skipTest("relay25-sendmail not built: %s" % self.bin)

    # helpers
    def env(self, relay=None, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY25_")}
        env.update(LOGNAME=LOGIN, USER=LOGIN, HOME=str(self.tmp))
        if relay is not None:
            env["RELAY25_SUBMIT"] = "127.0.0.1:%d" % relay.port
        env.update(extra)
        return env

    def run_sm(self, args, data, relay=None, env=None, timeout=30):
        """relay25-sendmail ARGS with data on stdin; CompletedProcess."""
        if env is None:
            env = self.env(relay)
        return subprocess.run([self.bin] + list(args), input=data, env=env,
                              capture_output=True, timeout=timeout * SLOW)

    def ok(self, r):
        self.assertEqual(r.returncode, 0, "exit %d, stderr: %s" % (
            r.returncode, r.stderr.decode(errors="replace")))

    def one_message(self, esp):
        msgs = esp.wait_messages(1)
        self.assertEqual(len(msgs), 1, msgs)
        return msgs[0]

    # cron, mail(1), PHP
    def test_cron_style(self):
        """cron: `sendmail -FCronDaemon -i -B8BITMIME -oem root`, the
        message from standard input, no From: of its own."""
        esp, relay = self.esp_and_relay()
        body = b"Subject: Cron <root@box> run-parts /etc/cron.daily\n" \
               b"Content-Type: text/plain; charset=UTF-8\n\n" \
               b"/etc/cron.daily/logrotate:\nerror: skipping\n"
        r = self.run_sm(["-C", str(relay.config), "-FCronDaemon", "-i",
                         "-B8BITMIME", "-oem", "-odi", "root", "ops@example.test"],
                        body, env=self.env())
        self.ok(r)
        m = self.one_message(esp)
        self.assertEqual(m.meta["mail_from"], "%s@%s" % (LOGIN, HOST))
        self.assertEqual(m.meta["rcpt_tos"], ["root@%s" % HOST, "ops@example.test"])
        self.assertIn("BODY=8BITMIME", " ".join(m.meta["mail_options"]).upper())
        want = (b"Subject: Cron <root@box> run-parts /etc/cron.daily\r\n"
                b"Content-Type: text/plain; charset=UTF-8\r\n"
                b"From: CronDaemon <%s@%s>\r\n\r\n"
                b"/etc/cron.daily/logrotate:\r\nerror: skipping\r\n") % (
                    LOGIN.encode(), HOST.encode())
        self.assertEqual(m.data, want)

    def test_mail_command(self):
        """mail(1) (s-nail, Debian) with its mta pointed at relay25-sendmail."""
        snail = shutil.which("s-nail")
        if not snail:
            self.skipTest("s-nail not installed (apt-get install s-nail)")
        esp, relay = self.esp_and_relay()
        env = self.env(relay, MAILRC="/dev/null", NAILRC="/dev/null")
        r = subprocess.run([snail, "-:/", "-Sv15-compat", "-Smta=%s" % self.bin,
                            "-Sexpandaddr", "-s", "disk space report",
                            "-r", "reports@example.test", "admin@example.test"],
                           input=b"/ is 91% full\n", env=env, capture_output=True,
                           timeout=30 * SLOW)
        self.ok(r)
        m = self.one_message(esp)
        self.assertEqual(m.meta["mail_from"], "reports@example.test")
        self.assertEqual(m.meta["rcpt_tos"], ["admin@example.test"])
        self.assertIn(b"Subject: disk space report\r\n", m.data)
        self.assertTrue(m.data.endswith(b"\r\n\r\n/ is 91% full\r\n"), m.data)

    def test_php_t_i_recipients_from_headers(self):
        """PHP mail(): `sendmail -t -i`, recipients only in the headers;
        Bcc reaches its recipient and is gone from the stored message."""
        esp, relay = self.esp_and_relay()
        msg = (b"To: \"Doe, Jane\" <jane@example.test>, bob@example.test\n"
               b"Cc: team: carol@example.test,\n\tdave@example.test;\n"
               b"Bcc: hidden@example.test\n"
               b"From: webapp <app@example.test>\n"
               b"Subject: order 42\n\nThanks.\n")
        r = self.run_sm(["-t", "-i"], msg, relay)
        self.ok(r)
        m = self.one_message(esp)
        self.assertEqual(sorted(m.meta["rcpt_tos"]), sorted([
            "jane@example.test", "bob@example.test", "carol@example.test",
            "dave@example.test", "hidden@example.test"]))
        self.assertNotIn(b"hidden@example.test", m.data)
        self.assertNotIn(b"Bcc", m.data)
        self.assertIn(b"From: webapp <app@example.test>\r\n", m.data)
        self.assertEqual(m.data.count(b"From:"), 1)      # none added

    def test_t_adds_command_line_recipients(self):
        esp, relay = self.esp_and_relay()
        r = self.run_sm(["-t", "-oi", "extra@example.test"],
                        b"To: a@example.test\nSubject: x\n\nbody\n", relay)
        self.ok(r)
        m = self.one_message(esp)
        self.assertEqual(sorted(m.meta["rcpt_tos"]),
                         ["a@example.test", "extra@example.test"])

    # the body
    def test_lone_dot_with_i_is_delivered(self):
        esp, relay = self.esp_and_relay()
        msg = b"Subject: dots\n\nbefore\n.\n..two\n.one\nafter\n"
        r = self.run_sm(["-i", "-f", "s@example.test", "r@example.test"], msg, relay)
        self.ok(r)
        m = self.one_message(esp)
        self.assertTrue(m.data.endswith(
            b"\r\n\r\nbefore\r\n.\r\n..two\r\n.one\r\nafter\r\n"), m.data)

    def test_lone_dot_without_i_ends_input(self):
        esp, relay = self.esp_and_relay()
        msg = b"Subject: dots\n\nbefore\n.\nnever sent\n"
        r = self.run_sm(["-f", "s@example.test", "r@example.test"], msg, relay)
        self.ok(r)
        m = self.one_message(esp)
        self.assertTrue(m.data.endswith(b"\r\n\r\nbefore\r\n"), m.data)
        self.assertNotIn(b"never sent", m.data)
        # without -i a dot-led line that is not alone is still delivered
        esp2, relay2 = self.esp_and_relay()
        r = self.run_sm(["r@example.test"], b"Subject: d\n\n.x\n..\n", relay2)
        self.ok(r)
        self.assertTrue(self.one_message(esp2).data.endswith(b"\r\n\r\n.x\r\n..\r\n"))

    def test_lf_to_crlf_8bit_and_large(self):
        """LF and CRLF input both arrive as CRLF; 8-bit bytes pass as they
        are; a message larger than every buffer streams through."""
        esp, relay = self.esp_and_relay()
        lines = [b"Subject: big\r", b"MIME-Version: 1.0", b""]
        lines += [b"gr\xc3\xbc\xc3\x9fe \xff line %06d" % i +
                  (b"\r" if i % 2 else b"") for i in range(60000)]
        msg = b"\n".join(lines) + b"\n"
        r = self.run_sm(["-i", "-f", "s@example.test", "r@example.test"], msg, relay,
                        timeout=60)
        self.ok(r)
        m = self.one_message(esp)
        want = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        want = want.replace(b"MIME-Version: 1.0\r\n",
                            b"MIME-Version: 1.0\r\nFrom: s@example.test\r\n", 1)
        self.assertEqual(len(m.data), len(want))
        self.assertEqual(m.data, want)
        self.assertGreater(len(want), 1024 * 1024)   # over the header limit and every buffer

    def test_no_trailing_newline_and_no_headers(self):
        esp, relay = self.esp_and_relay()
        r = self.run_sm(["-F", "Nightly \"Backup\"", "r@example.test"],
                        b"no headers here\nlast line", relay)
        self.ok(r)
        m = self.one_message(esp)
        self.assertEqual(m.data, b"From: \"Nightly \\\"Backup\\\"\" <%s@%s>\r\n\r\n"
                         b"no headers here\r\nlast line\r\n" % (
                             LOGIN.encode(), HOST.encode()))

    # where to submit
    def test_submit_override_and_config(self):
        """-C FILE's [server] listen is used; RELAY25_SUBMIT wins over it."""
        esp, relay = self.esp_and_relay()
        r = self.run_sm(["-C", str(relay.config), "a@example.test"],
                        b"Subject: via config\n\nx\n", env=self.env())
        self.ok(r)
        wrong = self.tmp / "wrong.ini"
        wrong.write_text("[server]\nlisten = 127.0.0.1:%d ; comment\n"
                         % self.refusing_port())
        r = self.run_sm(["-C", str(wrong), "b@example.test"],
                        b"Subject: via env\n\nx\n", relay)    # RELAY25_SUBMIT set
        self.ok(r)
        msgs = esp.wait_messages(2)
        self.assertEqual([m.meta["rcpt_tos"] for m in msgs],
                         [["a@example.test"], ["b@example.test"]])
        # the wrong file alone fails with "try again"
        r = self.run_sm(["-C", str(wrong), "c@example.test"], b"x\n", env=self.env())
        self.assertEqual(r.returncode, EX_TEMPFAIL, r.stderr)
        # and a -C file that cannot be read is a configuration error
        r = self.run_sm(["-C", str(self.tmp / "missing.ini"), "c@example.test"],
                        b"x\n", env=self.env())
        self.assertEqual(r.returncode, EX_CONFIG, r.stderr)

    # failures: the exit codes a caller acts on
    def test_relay_down_is_tempfail(self):
        port = self.refusing_port()
        t0 = time.monotonic()
        r = self.run_sm(["r@example.test"], b"Subject: s\n\nsecret body text\n",
                        env=self.env(RELAY25_SUBMIT="127.0.0.1:%d" % port))
        self.assertEqual(r.returncode, EX_TEMPFAIL, r.stderr)
        err = r.stderr.decode()
        self.assertIn("127.0.0.1:%d" % port, err)
        self.assertIn("try again later", err)
        self.assertNotIn("secret body text", err)
        self.assertLess(time.monotonic() - t0, 10 * SLOW)

    def test_silent_server_times_out(self):
        """A server that accepts but never greets: bounded by the step
        timeout (RELAY25_SUBMIT_TIMEOUT), exit 75."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        self.addCleanup(s.close)
        t0 = time.monotonic()
        r = self.run_sm(["r@example.test"], b"x\n", env=self.env(
            RELAY25_SUBMIT="127.0.0.1:%d" % s.getsockname()[1],
            RELAY25_SUBMIT_TIMEOUT="1"))
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, EX_TEMPFAIL, r.stderr)
        self.assertIn(b"timed out", r.stderr)
        self.assertLess(took, 8)

    def test_stalled_input_sends_nothing(self):
        """The writer stops mid-body: after the step timeout relay25-sendmail
        gives up (exit 74) without the end-of-data dot, so no truncated
        message is delivered."""
        esp, relay = self.esp_and_relay()
        p = subprocess.Popen([self.bin, "-i", "r@example.test"], stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             env=self.env(relay, RELAY25_SUBMIT_TIMEOUT="1"))
        self.addCleanup(self._reap, p)
        p.stdin.write(b"Subject: half\n\nfirst half\n")
        p.stdin.flush()
        self.assertEqual(p.wait(15 * SLOW), EX_IOERR)
        self.assertIn(b"timed out reading the message", p.stderr.read())
        p.stdin.close()
        self.assert_nothing_delivered(esp, wait=1.0)

    def test_rejected_recipient(self):
        """The ESP rejects one recipient: nothing is sent to anyone (a
        retry would duplicate), exit 69, the reply on stderr."""
        esp, relay = self.esp_and_relay(esp_kw={"reject_rcpt": ("nobody@example.test",)})
        r = self.run_sm(["-i", "ok@example.test", "nobody@example.test"],
                        b"Subject: s\n\nconfidential\n", relay)
        self.assertEqual(r.returncode, EX_UNAVAILABLE, r.stderr)
        err = r.stderr.decode()
        self.assertIn("RCPT TO:<nobody@example.test>: 550 5.1.1", err)
        self.assertNotIn("confidential", err)
        self.assert_nothing_delivered(esp, wait=1.0)

    def test_tempfail_recipient(self):
        esp, relay = self.esp_and_relay(esp_kw={"faults": ("tempfail-rcpt",)})
        r = self.run_sm(["-i", "a@example.test"], b"Subject: s\n\nx\n", relay)
        self.assertEqual(r.returncode, EX_TEMPFAIL, r.stderr)
        self.assertIn(b"451", r.stderr)

    def test_usage_errors(self):
        esp, relay = self.esp_and_relay()
        cases = [
            (["-t"], b"Subject: nobody\n\nx\n", EX_DATAERR),
            (["-t"], b"To: John Smith\n\nx\n", EX_DATAERR),
            ([], b"x\n", EX_USAGE),
            (["-Q", "a@example.test"], b"x\n", EX_USAGE),
            (["-bp"], b"", EX_USAGE),
            (["-oZ", "a@example.test"], b"x\n", EX_USAGE),
            (["-f"], b"", EX_USAGE),
            (["-f", "a b c", "a@example.test"], b"x\n", EX_USAGE),
            (["Not An Address"], b"x\n", EX_USAGE),
        ]
        for args, data, code in cases:
            r = self.run_sm(args, data, relay)
            self.assertEqual(r.returncode, code, "%r: %r" % (args, r.stderr))
            self.assertIn(b"relay25-sendmail:", r.stderr)
        self.assert_nothing_delivered(esp, wait=0.5)

    def test_double_dash_and_null_sender(self):
        esp, relay = self.esp_and_relay()
        r = self.run_sm(["-f", "<>", "--", "-odd-name@example.test"],
                        b"Subject: bounce\n\nx\n", relay)
        self.ok(r)
        m = self.one_message(esp)
        self.assertEqual(m.meta["mail_from"], "")
        self.assertEqual(m.meta["rcpt_tos"], ["-odd-name@example.test"])

    def test_verbose_shows_dialogue_not_content(self):
        esp, relay = self.esp_and_relay()
        r = self.run_sm(["-v", "-i", "-fs@example.test", "r@example.test"],
                        b"Subject: s\n\nprivate words\n", relay)
        self.ok(r)
        err = r.stderr.decode()
        self.assertIn(">>> MAIL FROM:<s@example.test>", err)
        self.assertIn(">>> RCPT TO:<r@example.test>", err)
        self.assertIn("<<< 354", err)
        self.assertRegex(err, r"<<< 250 2\.0\.0 Ok: queued as")
        self.assertNotIn("private words", err)

    def test_bs_speaks_smtp_on_stdio(self):
        esp, relay = self.esp_and_relay()
        p = subprocess.Popen([self.bin, "-bs"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=self.env(relay))
        self.addCleanup(self._reap, p)

        def expect(code):
            line = b""
            while True:
                line = p.stdout.readline()
                self.assertTrue(line, "EOF from -bs")
                if line[3:4] != b"-":
                    break
            self.assertEqual(line[:3], code, line)

        def say(s):
            p.stdin.write(s)
            p.stdin.flush()

        expect(b"220")
        for cmd, code in ((b"EHLO app.test\r\n", b"250"),
                          (b"MAIL FROM:<s@example.test>\r\n", b"250"),
                          (b"RCPT TO:<r@example.test>\r\n", b"250"),
                          (b"DATA\r\n", b"354"),
                          (b"Subject: bs\r\n\r\nhi\r\n.\r\n", b"250"),
                          (b"QUIT\r\n", b"221")):
            say(cmd)
            expect(code)
        p.stdin.close()
        self.assertEqual(p.wait(10 * SLOW), 0)
        m = self.one_message(esp)
        self.assertEqual(m.data, b"Subject: bs\r\n\r\nhi\r\n")

    def test_bs_relay_down(self):
        port = self.refusing_port()
        r = self.run_sm(["-bs"], b"EHLO x\r\n",
                        env=self.env(RELAY25_SUBMIT="127.0.0.1:%d" % port))
        self.assertEqual(r.returncode, EX_TEMPFAIL)
        self.assertTrue(r.stdout.startswith(b"421 4.4.1 "), r.stdout)

    @staticmethod
    def _reap(p):
        if p.poll() is None:
            p.kill()
        p.wait(10)
