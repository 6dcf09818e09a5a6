"""test_failures.py - the upstream or the client failing (SPEC 1.5, 1.7,
1.8): the client always gets a 4xx, never a 2xx for an undelivered message,
nothing truncated is ever stored, and credentials never reach an ESP that
is not proven by its certificate."""

import threading
import time

from lib import (PASSWORD, RelayTestCase, certs, dot_stuff, make_message, upstream_for,
                 wait_for)


class Failures(RelayTestCase):

    def mail_reply(self, relay):
        """Greet, EHLO, MAIL; the reply to MAIL."""
        c = self.raw(relay)
        self.greet(c)
        return c, c.cmd("MAIL FROM:<s@example.test>")

    # ------------------------------------------------ upstream unreachable
    def test_upstream_down_451_at_mail(self):
        port = self.refusing_port()
        relay = self.start_relay({"host": "localhost", "port": port, "tls": "starttls",
                                  "ca_file": str(certs() / "ca.pem"), "username": "u",
                                  "password": PASSWORD, "connect_timeout": "5s"})
        c, r = self.mail_reply(relay)
        self.assert_code(r, 451, "4.4.1")
        # the session stays usable
        self.assertEqual(c.cmd("NOOP").code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)

    def test_wrong_password(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp, password="not-the-password"))
        c, r = self.mail_reply(relay)
        self.assert_code(r, 451, "4.4.1")   # 4xx: no mail bounced by a typo
        c.cmd("QUIT")
        log = esp.auth_log()
        self.assertTrue(log, "relay25 never tried to authenticate")
        self.assertTrue(all(e["tls"] and not e["ok"] for e in log), log)
        self.assert_nothing_delivered(esp, 0.5)

    def test_auth_rejected_by_fault(self):
        esp = self.start_esp(faults=["auth-fail"])
        relay = self.start_relay(upstream_for(esp))
        c, r = self.mail_reply(relay)
        self.assert_code(r, "4xx")
        self.assert_nothing_delivered(esp, 0.5)

    def bad_cert(self, cert, kind="starttls"):
        esp = self.start_esp(cert=cert, kinds=("starttls", "implicit"))
        relay = self.start_relay(upstream_for(esp, kind))
        c, r = self.mail_reply(relay)
        self.assert_code(r, 451, "4.4.1")
        c.cmd("QUIT")
        # no AUTH (so no password) ever reached this ESP, and no MAIL
        self.assertEqual(esp.auth_log(), [])
        for e in esp.conn_log():
            self.assertFalse([x for x in e["cmds"] if x.upper().startswith(("AUTH", "MAIL"))],
                             e)
        self.assert_nothing_delivered(esp, 0.5)

    def test_cert_wrong_name_starttls(self):
        self.bad_cert("wrong")

    def test_cert_wrong_name_implicit(self):
        self.bad_cert("wrong", "implicit")

    def test_cert_untrusted_starttls(self):
        self.bad_cert("selfsigned")

    def test_cert_untrusted_implicit(self):
        self.bad_cert("selfsigned", "implicit")

    def test_cert_expired_starttls(self):
        self.bad_cert("expired")

    def test_cert_expired_implicit(self):
        self.bad_cert("expired", "implicit")

    def test_server_name_overrides_checked_name(self):
        # positive control for the wrong-name tests: the same certificate is
        # accepted when server_name says wrong.example
        esp = self.start_esp(cert="wrong")
        relay = self.start_relay(upstream_for(esp, server_name="wrong.example"))
        s = self.smtp(relay)
        s.sendmail("s@example.test", ["r@example.test"], make_message("server_name"))
        s.quit()
        self.assertEqual(len(esp.wait_messages(1)), 1)

    def test_bad_tls_handshake(self):
        esp = self.start_esp(faults=["bad-tls"])
        relay = self.start_relay(upstream_for(esp))
        c, r = self.mail_reply(relay)
        self.assert_code(r, 451, "4.4.1")
        self.assertEqual(esp.auth_log(), [])

    def test_upstream_closes_after_banner(self):
        esp = self.start_esp(faults=["close-after-banner"])
        relay = self.start_relay(upstream_for(esp))
        c, r = self.mail_reply(relay)
        self.assert_code(r, 451, "4.4.1")

    def test_upstream_stalls_banner_timeout(self):
        esp = self.start_esp(faults=["stall-banner"])
        relay = self.start_relay(upstream_for(esp), server={"command_timeout": "3s"})
        c = self.raw(relay)
        self.greet(c)
        t0 = time.monotonic()
        r = c.cmd("MAIL FROM:<s@example.test>")
        self.assert_code(r, 451, "4.4.1")
        self.note("stalled upstream answered after %.1fs" % (time.monotonic() - t0))

    # ------------------------------------------------ failing mid-transaction
    def test_upstream_closes_mid_data(self):
        esp = self.start_esp(faults=["close-mid-data:8192"])
        relay = self.start_relay(upstream_for(esp))
        c = self.raw(relay)
        self.greet(c)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        body = dot_stuff(make_message("cut", size=256 * 1024))
        errors = []

        def send():
            try:
                c.send(body)
            except OSError as e:     # relay25 may close after its 4xx
                errors.append(e)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        r = c.reply_or_eof(timeout=30)
        t.join(30)
        self.assertIsNotNone(r, "connection closed without a reply")
        self.assertIn(r.code, (451, 421), r)
        self.assertTrue(r.text.startswith("4.4.2"), r)
        self.assert_nothing_delivered(esp, 1.0)
        self.note("client got %r" % r.lines[-1])

    def test_upstream_silent_after_data_times_out(self):
        esp = self.start_esp(faults=["stall-data-reply"])
        relay = self.start_relay(upstream_for(esp), server={"data_timeout": "3s"})
        c = self.raw(relay)
        self.greet(c)
        c.cmd("MAIL FROM:<s@example.test>")
        c.cmd("RCPT TO:<r@example.test>")
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(dot_stuff(make_message("no reply")))
        r = c.reply_or_eof(timeout=30)
        self.assertIsNotNone(r, "connection closed without a reply")
        self.assertIn(r.code, (451, 421), r)
        self.assertTrue(r.text.startswith("4.4.2"), r)

    def test_client_drops_mid_data(self):
        esp, relay = self.esp_and_relay()
        c = self.raw(relay)
        self.greet(c)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(make_message("client goes away", size=64 * 1024))
        time.sleep(0.3)
        c.close()
        # the upstream connection is dropped (not QUIT, no final dot)
        conns = wait_for(lambda: [e for e in esp.conn_log() if "DATA" in e["cmds"]],
                         10, "the upstream session to end")
        self.assertTrue(conns[0]["end"].startswith(("eof", "read-error")), conns[0])
        self.assert_nothing_delivered(esp, 1.0)

    # ------------------------------------------------ failover
    def test_failover_connection_refused(self):
        esp = self.start_esp()
        port = self.refusing_port()
        primary = upstream_for(esp, name="primary", port=port)
        backup = upstream_for(esp, name="backup")
        relay = self.start_relay([primary, backup])
        s = self.smtp(relay)
        s.sendmail("s@example.test", ["r@example.test"], make_message("failover"))
        s.quit()
        m = esp.wait_messages(1)[0]
        self.assertEqual(m.meta["rcpt_tos"], ["r@example.test"])

    def test_failover_tls_failure(self):
        bad = self.start_esp(name="bad", cert="wrong")
        good = self.start_esp(name="good")
        relay = self.start_relay([upstream_for(bad, name="primary"),
                                  upstream_for(good, name="backup")])
        s = self.smtp(relay)
        s.sendmail("s@example.test", ["r@example.test"], make_message("failover tls"))
        s.quit()
        self.assertEqual(len(good.wait_messages(1)), 1)
        self.assertEqual(bad.messages(), [])
        self.assertEqual(bad.auth_log(), [])

    def test_failover_auth_failure(self):
        bad = self.start_esp(name="bad", faults=["auth-fail"])
        good = self.start_esp(name="good")
        relay = self.start_relay([upstream_for(bad, name="primary"),
                                  upstream_for(good, name="backup")])
        s = self.smtp(relay)
        s.sendmail("s@example.test", ["r@example.test"], make_message("failover auth"))
        s.quit()
        self.assertEqual(len(good.wait_messages(1)), 1)
        self.assertEqual(bad.messages(), [])
