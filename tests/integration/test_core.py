"""test_core.py - relay25's session contract on the happy path (SPEC 1):
greeting, EHLO, byte-exact delivery over STARTTLS and implicit TLS with the
envelope and AUTH intact, several transactions per session, swaks."""

import re
import subprocess
import time

from lib import (CLIENT_NAME, RELAY_NAME, USER, RelayTestCase, crlf,
                 dot_stuff, make_message, upstream_for, wait_for)


def ehlo_keywords(reply):
    """{KEYWORD: params} from an EHLO Reply (the first line is the greeting)."""
    out = {}
    for line in reply.lines[1:]:
        kw, _, params = line[4:].partition(" ")
        out[kw.upper()] = params
    return out


def tricky_message(subject):
    """Dot-led lines, a lone dot, 8-bit text, a 998-octet line, trailing
    blanks and empty lines: everything a relay could get wrong."""
    return make_message(subject, body_lines=[
        "first line",
        ".leading dot",
        "..two leading dots",
        ".",
        " . space dot",
        "8-bit: gr\u00fc\u00df dich, \u00e7a va? \u2713",
        "x" * 998,
        "trailing blanks   \t",
        "",
        "",
        "last line",
    ], extra_headers=["Content-Transfer-Encoding: 8bit"])


class Core(RelayTestCase):

    def test_greeting(self):
        esp, relay = self.esp_and_relay()
        c = self.raw(relay)
        r = c.reply()
        self.assertEqual(r.lines, ["220 %s ESMTP relay25" % RELAY_NAME])
        self.assertEqual(c.cmd("QUIT").code, 221)

    def test_greeting_does_not_wait_for_upstream(self):
        esp = self.start_esp(faults=["stall-banner"])
        relay = self.start_relay(upstream_for(esp))
        for _ in range(3):
            c = self.raw(relay)
            t0 = time.monotonic()
            r = c.reply(timeout=2)
            self.assertEqual(r.code, 220)
            self.assertLess(time.monotonic() - t0, 1.0)
            self.assertEqual(c.cmd("QUIT").code, 221)

    def test_ehlo_extensions(self):
        # the ESP advertises CHUNKING too: relay25 must not pass it on
        esp, relay = self.esp_and_relay(esp_kw={"extra_args": ["--advertise", "CHUNKING"]})
        c = self.raw(relay)
        r = self.greet(c)
        self.assertTrue(r.lines[0].startswith("250-%s" % RELAY_NAME), r)
        kw = ehlo_keywords(r)
        for k in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES"):
            self.assertIn(k, kw, r)
        self.assertRegex(kw["SIZE"], r"^\d+$", "SIZE should carry the limit")
        self.assertEqual(int(kw["SIZE"]), 25 * 1024 * 1024)
        for k in ("AUTH", "STARTTLS", "CHUNKING", "SMTPUTF8", "DSN"):
            self.assertNotIn(k, kw, r)
        r = c.cmd("HELO " + CLIENT_NAME)
        self.assertEqual(r.code, 250)
        self.assertEqual(len(r.lines), 1)
        self.assertEqual(c.cmd("QUIT").code, 221)

    def test_ehlo_offers_smtputf8_dsn_once_upstream_does(self):
        esp, relay = self.esp_and_relay(esp_kw={"smtputf8": True, "dsn": True})

        def offered():
            c = self.raw(relay)
            kw = ehlo_keywords(self.greet(c))
            c.cmd("QUIT")
            return "SMTPUTF8" in kw and "DSN" in kw
        wait_for(offered, 10, "SMTPUTF8 and DSN in EHLO after the upstream probe", 0.5)

    def deliver_and_check(self, kind):
        esp, relay = self.esp_and_relay(kind)
        msg = tricky_message("byte exact over %s" % kind)
        s = self.smtp(relay)
        s.ehlo()
        s.sendmail("sender@example.test", ["rcpt1@example.test", "rcpt2@example.test"],
                   msg, mail_options=["BODY=8BITMIME"])
        s.quit()
        m = esp.wait_messages(1)[0]
        self.assertEqual(crlf(m.data), crlf(msg))
        self.assertEqual(m.meta["mail_from"], "sender@example.test")
        self.assertEqual(m.meta["rcpt_tos"], ["rcpt1@example.test", "rcpt2@example.test"])
        self.assertIn("BODY=8BITMIME", [o.upper() for o in m.meta["mail_options"]])
        self.assertEqual(m.meta["auth_user"], USER)
        self.assertEqual(m.meta["kind"], kind)
        self.assertRegex(m.meta["tls_version"] or "", r"^TLSv1\.[23]$")
        log = esp.auth_log()
        self.assertTrue(log and all(e["tls"] for e in log), log)
        self.assertTrue(any(e["ok"] and e["user"] == USER for e in log), log)
        self.assert_no_cleartext_auth(esp)
        self.assertEqual(esp.messages()[0].meta["bare_lf"], 0)
        self.note("delivered via %s, %s, %d bytes" % (kind, m.meta["tls_version"],
                                                      m.meta["size"]))

    def test_delivery_starttls_byte_exact(self):
        self.deliver_and_check("starttls")

    def test_delivery_implicit_tls_byte_exact(self):
        self.deliver_and_check("implicit")

    def test_three_messages_one_session(self):
        esp, relay = self.esp_and_relay()
        s = self.smtp(relay)
        s.ehlo()
        sent = []
        for i in range(3):
            msg = make_message("message %d of 3" % i, body_lines=["body %d" % i, ".dot %d" % i])
            self.assertEqual(s.mail("from%d@example.test" % i)[0], 250)
            self.assertEqual(s.rcpt("to%d@example.test" % i)[0], 250)
            code, text = s.data(msg)
            self.assertEqual(code, 250, text)
            sent.append((msg, text.decode()))
        s.quit()
        got = esp.wait_messages(3)
        self.assertEqual(len(got), 3)
        for i, ((msg, reply), m) in enumerate(zip(sent, got)):
            self.assertEqual(crlf(m.data), msg)
            self.assertEqual(m.meta["mail_from"], "from%d@example.test" % i)
            self.assertEqual(m.meta["rcpt_tos"], ["to%d@example.test" % i])
            # the upstream's reply is what the client gets
            self.assertIn(m.meta["queue_id"], reply)
            self.assertTrue(reply.startswith("2.0.0"), reply)

    def test_rset_and_second_transaction(self):
        esp, relay = self.esp_and_relay()
        c = self.raw(relay)
        self.greet(c)
        self.assertEqual(c.cmd("MAIL FROM:<first@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<dropped@example.test>").code, 250)
        r = c.cmd("RSET")
        self.assertEqual(r.code, 250)
        self.assertEqual(c.cmd("NOOP").code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<second@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<kept@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        msg = make_message("after RSET", body_lines=["second transaction"])
        c.send(dot_stuff(msg))
        self.assertEqual(c.reply().code, 250)
        # and a third one after a completed transaction
        self.assertEqual(c.cmd("MAIL FROM:<third@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<third@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(dot_stuff(make_message("third")))
        self.assertEqual(c.reply().code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        got = esp.wait_messages(2)
        self.assertEqual([(m.meta["mail_from"], m.meta["rcpt_tos"]) for m in got],
                         [("second@example.test", ["kept@example.test"]),
                          ("third@example.test", ["third@example.test"])])
        self.assertEqual(crlf(got[0].data), msg)
        self.assert_nothing_delivered_more(esp, 2)

    def assert_nothing_delivered_more(self, esp, n):
        time.sleep(0.5)
        self.assertEqual(len(esp.messages()), n)

    def test_per_recipient_550_passed_through(self):
        esp, relay = self.esp_and_relay(esp_kw={"reject_rcpt": ["nobody@example.test"]})
        c = self.raw(relay)
        self.greet(c)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<ok1@example.test>").code, 250)
        r = c.cmd("RCPT TO:<nobody@example.test>")
        self.assert_code(r, 550, "5.1.1")
        self.assertIn("Recipient address rejected", r.text)
        self.assertEqual(c.cmd("RCPT TO:<ok2@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        msg = make_message("partial rcpts")
        c.send(dot_stuff(msg))
        self.assertEqual(c.reply().code, 250)
        c.cmd("QUIT")
        m = esp.wait_messages(1)[0]
        self.assertEqual(m.meta["rcpt_tos"], ["ok1@example.test", "ok2@example.test"])
        self.assertEqual(crlf(m.data), msg)

    def test_upstream_replies_passed_through(self):
        # a 4xx the upstream sends at MAIL and a 5xx after DATA reach the
        # client as they are
        esp, relay = self.esp_and_relay(esp_kw={"faults": ["tempfail-mail@1",
                                                           "reject-data@1"]})
        c = self.raw(relay)
        self.greet(c)
        r = c.cmd("MAIL FROM:<s@example.test>")
        self.assert_code(r, 451, "4.3.0")
        self.assertIn("Temporary failure", r.text)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(dot_stuff(make_message("rejected")))
        r = c.reply()
        self.assert_code(r, 554, "5.6.0")
        c.cmd("QUIT")
        self.assert_nothing_delivered(esp, 1.0)

    def swaks(self, relay, *extra):
        argv = ["swaks", "--server", "127.0.0.1:%d" % relay.port, "--ehlo", CLIENT_NAME,
                "--from", "swaks-sender@example.test", "--to", "swaks-rcpt@example.test",
                "--header", "Subject: via swaks", "--body",
                "Hello from swaks.\n.a dot line\nbye", "--timeout", "30"] + list(extra)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        transcript = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, transcript)
        return transcript

    def test_swaks(self):
        esp, relay = self.esp_and_relay()
        t = self.swaks(relay)
        t2 = self.swaks(relay, "--pipeline")
        got = esp.wait_messages(2)
        for m, tr in zip(got, (t, t2)):
            self.assertEqual(m.meta["mail_from"], "swaks-sender@example.test")
            self.assertEqual(m.meta["rcpt_tos"], ["swaks-rcpt@example.test"])
            self.assertIn(b"Subject: via swaks\r\n", m.data)
            self.assertIn(b"\r\nHello from swaks.\r\n.a dot line\r\nbye\r\n", m.data)
            self.assertIn(m.meta["queue_id"], tr)
            self.assertTrue(re.search(r"^<-  250 2\.0\.0 Ok: queued as", tr, re.M), tr)
