"""test_routing.py - sender identity and routing (issue 6 part 2):
`sender_domains` routes each transaction to its own account, failover stays
within the route, `rewrite_sender` sets the ESP's verified envelope sender."""

from lib import RelayTestCase, make_message, upstream_for, certs, PASSWORD


class Routing(RelayTestCase):

    def send(self, relay, sender, rcpt="r@example.test"):
        s = self.smtp(relay)
        s.ehlo()
        try:
            return s.sendmail(sender, [rcpt], make_message(subject="from " + sender))
        finally:
            s.quit()

    def test_routes_by_sender_domain(self):
        corp = self.start_esp(name="corp")
        other = self.start_esp(name="other")
        relay = self.start_relay([
            upstream_for(other, name="default"),
            upstream_for(corp, name="corp", sender_domains="corp.example *.corp.example"),
        ])
        self.send(relay, "alerts@corp.example")
        self.send(relay, "cron@host.corp.example")
        self.send(relay, "someone@elsewhere.test")
        corp.wait_messages(2)
        other.wait_messages(1)
        self.assertEqual(sorted(m.meta["mail_from"] for m in corp.messages()),
                         ["alerts@corp.example", "cron@host.corp.example"])
        self.assertEqual([m.meta["mail_from"] for m in other.messages()],
                         ["someone@elsewhere.test"])

    def test_failover_stays_within_the_route(self):
        other = self.start_esp(name="other")
        backup = self.start_esp(name="backup")
        dead = self.refusing_port()
        relay = self.start_relay([
            upstream_for(other, name="default"),
            {"name": "corp", "host": "localhost", "port": dead, "tls": "starttls",
             "ca_file": str(certs() / "ca.pem"), "username": "u", "password": PASSWORD,
             "sender_domains": "corp.example", "connect_timeout": "3s"},
            upstream_for(backup, name="corpbackup", sender_domains="corp.example"),
        ])
        self.send(relay, "a@corp.example")
        backup.wait_messages(1)
        self.assert_nothing_delivered(other, 0.5)

    def test_no_route_is_refused(self):
        corp = self.start_esp(name="corp")
        relay = self.start_relay(upstream_for(corp, sender_domains="corp.example"))
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<x@stranger.test>"), 550, "5.7.1")
        self.assert_code(c.cmd("MAIL FROM:<x@corp.example>"), 250)
        c.cmd("QUIT")

    def test_rewrite_sender(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp, rewrite_sender="verified@esp.example"))
        self.send(relay, "legacy-app@localhost")
        self.send(relay, "")                         # the null sender stays <>
        esp.wait_messages(2)
        froms = sorted(m.meta["mail_from"] for m in esp.messages())
        self.assertEqual(froms, ["", "verified@esp.example"])

    def test_second_transaction_for_another_domain_switches_account(self):
        corp = self.start_esp(name="corp")
        other = self.start_esp(name="other")
        relay = self.start_relay([
            upstream_for(other, name="default"),
            upstream_for(corp, name="corp", sender_domains="corp.example"),
        ])
        s = self.smtp(relay)
        s.ehlo()
        self.assertEqual(s.sendmail("a@corp.example", ["r@x.test"], make_message()), {})
        self.assertEqual(s.sendmail("b@other.test", ["r@x.test"], make_message()), {})
        s.quit()
        corp.wait_messages(1)
        other.wait_messages(1)
        self.assertEqual(len(corp.messages()), 1)
        self.assertEqual(len(other.messages()), 1)


class Headers(RelayTestCase):
    """Header From: rewriting and missing Date:/Message-ID: (issue 6 part
    2), done while streaming: the body passes untouched."""

    BODY = "line one\r\nFrom: not a header, body text\r\n..dot-stuffed\r\n"

    def raw_send(self, relay, headers):
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<app@legacy.test>"), 250)
        self.assert_code(c.cmd("RCPT TO:<r@example.test>"), 250)
        self.assert_code(c.cmd("DATA"), 354)
        c.send((headers + "\r\n" + self.BODY + ".\r\n").encode())
        self.assert_code(c.reply(), 250)
        c.cmd("QUIT")

    def stored(self, esp):
        esp.wait_messages(1)
        m = esp.messages()[0]
        head, _, body = m.data.partition(b"\r\n\r\n")
        return m, head.decode(), body

    def test_rewrite_header_from_keeps_display_name(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(
            esp, rewrite_sender="noreply@esp.example", rewrite_header_from="yes",
            rewrite_reply_to="yes"))
        self.raw_send(relay, "From: \"Printer, 3rd floor\" <scanner@legacy.test>\r\n"
                             "Sender: someone@legacy.test\r\n"
                             "Return-Path: <bounce@legacy.test>\r\n"
                             "Subject: scan\r\n")
        m, head, body = self.stored(esp)
        self.assertEqual(m.meta["mail_from"], "noreply@esp.example")
        self.assertIn('From: "Printer, 3rd floor" <noreply@esp.example>', head)
        self.assertIn("Reply-To: ", head)
        self.assertIn("scanner@legacy.test", head.split("Reply-To: ")[1].split("\r\n")[0])
        self.assertRegex(head, r"\r\nSender: <?noreply@esp\.example>?\r\n")
        self.assertNotIn("Return-Path", head)
        self.assertIn("Subject: scan", head)
        # the body is exactly what was sent (un-dot-stuffed by the ESP)
        self.assertEqual(body, self.BODY.replace("\r\n..", "\r\n.").encode())

    def test_add_missing_headers(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), server={"add_missing_headers": "yes"})
        self.raw_send(relay, "From: a@legacy.test\r\nSubject: no date\r\n")
        _, head, body = self.stored(esp)
        self.assertRegex(head, r"\r\nDate: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
        self.assertRegex(head, r"\r\nMessage-ID: <[0-9a-f]{32}@relay\.test>")
        self.assertEqual(body, self.BODY.replace("\r\n..", "\r\n.").encode())

    def test_present_headers_not_duplicated(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), server={"add_missing_headers": "yes"})
        self.raw_send(relay, "From: a@legacy.test\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
                             "Message-Id: <x@y>\r\n")
        _, head, _ = self.stored(esp)
        self.assertEqual(head.lower().count("\r\ndate:") + head.lower().startswith("date:"), 1)
        self.assertEqual(head.lower().count("message-id:"), 1)

    def test_off_by_default_byte_exact(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp))
        self.raw_send(relay, "From: a@legacy.test\r\n")
        _, head, _ = self.stored(esp)
        self.assertEqual(head, "From: a@legacy.test")
