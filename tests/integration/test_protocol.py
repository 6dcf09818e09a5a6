"""test_protocol.py - the client leg against hostile or sloppy input (SPEC 2):
reply codes for bad commands, limits, and SMTP smuggling through relay25 to
an upstream whose own end-of-data parser is lenient."""

import time

from lib import (RelayTestCase, crlf, dot_stuff, make_message, upstream_for)


class Protocol(RelayTestCase):

    def session(self, esp_kw=None, server=None):
        esp = self.start_esp(**(esp_kw or {}))
        relay = self.start_relay(upstream_for(esp), server=server)
        c = self.raw(relay)
        self.greet(c)
        return esp, relay, c

    def test_command_replies(self):
        esp, relay, c = self.session()
        self.assert_code(c.cmd("FROB"), 500, "5.5.1")
        self.assert_code(c.cmd("RCPT TO:<r@example.test>"), 503, "5.5.1")
        self.assert_code(c.cmd("DATA"), 503, "5.5.1")
        self.assert_code(c.cmd("MAIL FROM:<unterminated@example.test"), 501, "5.5.4")
        self.assert_code(c.cmd("VRFY someone"), 252)
        self.assertEqual(c.cmd("HELP").code // 100, 2)
        self.assert_code(c.cmd("NOOP"), 250)
        self.assert_code(c.cmd("RSET"), 250)
        self.assert_code(c.cmd("QUIT"), 221)
        self.assertTrue(c.wait_eof(5))

    def test_long_command_line_500_and_session_usable(self):
        esp, relay, c = self.session()
        r = c.cmd("NOOP " + "x" * 5000)
        self.assert_code(r, 500, "5.5.2")
        self.assert_code(c.cmd("NOOP"), 250)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(dot_stuff(make_message("after a long line")))
        self.assertEqual(c.reply().code, 250)
        self.assertEqual(len(esp.wait_messages(1)), 1)

    def test_too_many_bad_commands_421(self):
        esp, relay, c = self.session()
        c.send(b"BOGUS\r\n" * 25)
        codes = []
        while True:
            r = c.reply_or_eof(timeout=10)
            if r is None:
                break
            codes.append((r.code, r.text[:5]))
            if r.code == 421:
                break
        self.assertIn((421, "4.7.0"), codes, codes)
        self.assertTrue(19 <= len(codes) - 1 <= 21, "421 after %d bad commands" % (len(codes) - 1))
        self.assertTrue(c.wait_eof(5), "not closed after 421")

    def test_max_recipients_101st_gets_452(self):
        esp, relay, c = self.session()
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        batch = b"".join(b"RCPT TO:<r%03d@example.test>\r\n" % i for i in range(101))
        c.send(batch)
        codes = [c.reply().code for _ in range(101)]
        self.assertEqual(codes[:100], [250] * 100)
        self.assertEqual(codes[100], 452)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(dot_stuff(make_message("100 rcpts")))
        self.assertEqual(c.reply().code, 250)
        m = esp.wait_messages(1)[0]
        self.assertEqual(len(m.meta["rcpt_tos"]), 100)

    def test_size_limit(self):
        esp, relay, c = self.session(server={"max_message_size": "16K"})
        r = c.cmd("MAIL FROM:<s@example.test> SIZE=100000")
        self.assert_code(r, 552, "5.3.4")
        # no SIZE given: the limit is enforced while streaming, and the
        # message is aborted upstream, not delivered truncated
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(dot_stuff(make_message("too big", size=64 * 1024)))
        r = c.reply()
        self.assert_code(r, 552, "5.3.4")
        self.assert_nothing_delivered(esp, 1.0)
        # the session goes on
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(dot_stuff(make_message("small")))
        self.assertEqual(c.reply().code, 250)
        self.assertEqual(len(esp.wait_messages(1)), 1)

    def smuggle(self, fake_end):
        """Send one message whose body holds fake_end followed by a whole
        smuggled transaction; the upstream takes LF.LF etc. as end of data
        (--eod lenient), so only relay25's framing can keep it one message."""
        esp, relay, c = self.session(esp_kw={"extra_args": ["--eod", "lenient"]})
        self.assertEqual(c.cmd("MAIL FROM:<honest@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        body = (b"Subject: smuggling test\r\n\r\nbefore" + fake_end +
                b"MAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\n"
                b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n")
        c.send(body.replace(b"\r\n.\r\n", b"\r\n..\r\n") + b"\r\n.\r\n")
        r = c.reply()
        self.assertEqual(r.code, 250, r)
        c.cmd("QUIT")
        time.sleep(1.0)
        got = esp.messages()
        self.assertEqual(len(got), 1, "upstream saw %d messages: %r" % (len(got), got))
        m = got[0]
        self.assertEqual(m.meta["mail_from"], "honest@example.test")
        self.assertIn(b"MAIL FROM:<evil@example.test>", m.data)
        self.assertEqual((m.meta["bare_lf"], m.meta["bare_cr"]), (0, 0),
                         "bare CR/LF reached the upstream")

    def test_smuggling_lf_dot_lf(self):
        self.smuggle(b"\n.\n")

    def test_smuggling_lf_dot_crlf(self):
        self.smuggle(b"\n.\r\n")

    def test_smuggling_crlf_dot_lf(self):
        self.smuggle(b"\r\n.\n")

    def test_smuggling_cr_dot_cr(self):
        self.smuggle(b"\r.\r")

    def test_nul_bytes_removed_and_bare_lf_normalised(self):
        esp, relay, c = self.session()
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(b"Subject: nul\r\n\r\na\0b\nc\r\n.\r\n")
        self.assertEqual(c.reply().code, 250)
        m = esp.wait_messages(1)[0]
        self.assertEqual(m.data, b"Subject: nul\r\n\r\nab\r\nc\r\n")

    def test_max_clients_per_ip(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), server={"max_clients_per_ip": "2"})
        a, b = self.raw(relay), self.raw(relay)
        self.assertEqual(a.reply().code, 220)
        self.assertEqual(b.reply().code, 220)
        c = self.raw(relay)
        r = c.reply_or_eof(timeout=5)
        self.assertIsNotNone(r, "third connection closed without a reply")
        self.assert_code(r, 421, "4.7.0")
        self.assertTrue(c.wait_eof(5))
        a.cmd("QUIT")
        a.wait_eof(5)

        def fourth_greeted():
            d = self.raw(relay)
            r = d.reply_or_eof(timeout=5)
            d.send(b"QUIT\r\n")
            return r is not None and r.code == 220
        from lib import wait_for
        wait_for(fourth_greeted, 5, "a slot to free up after QUIT", 0.2)

    def test_mail_params_passed_when_upstream_supports_them(self):
        esp, relay, c = self.session(esp_kw={"smtputf8": True, "dsn": True})
        # relay25 learns SMTPUTF8/DSN from its start-up probe: wait for them
        from lib import wait_for

        def offered():
            r = c.cmd("EHLO client.test")
            return "SMTPUTF8" in r.text and "DSN" in r.text
        wait_for(offered, 10, "SMTPUTF8/DSN offered", 0.5)
        r = c.cmd("MAIL FROM:<s@example.test> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc123")
        self.assertEqual(r.code, 250, r)
        r = c.cmd("RCPT TO:<r@example.test> NOTIFY=FAILURE ORCPT=rfc822;r@example.test")
        self.assertEqual(r.code, 250, r)
        self.assertEqual(c.cmd("DATA").code, 354)
        msg = make_message("params")
        c.send(dot_stuff(msg))
        self.assertEqual(c.reply().code, 250)
        m = esp.wait_messages(1)[0]
        self.assertEqual(sorted(o.upper() for o in m.meta["mail_options"]),
                         sorted(["BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=ABC123"]))
        self.assertEqual(m.meta["rcpt_options"],
                         [["NOTIFY=FAILURE", "ORCPT=rfc822;r@example.test"]])
        self.assertEqual(crlf(m.data), msg)
