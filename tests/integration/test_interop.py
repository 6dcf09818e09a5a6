"""test_interop.py - relay25 against a third-party SMTP server (aiosmtpd with
STARTTLS or implicit TLS, AUTH required and only over TLS)."""

from lib import USER, RelayTestCase, crlf, make_message, upstream_for


class Interop(RelayTestCase):

    def deliver(self, kind):
        esp = self.start_aiosmtpd()
        relay = self.start_relay(upstream_for(esp, kind))
        msg = make_message("interop %s" % kind,
                           body_lines=["hello aiosmtpd", ".dot line", "", "bye"])
        s = self.smtp(relay)
        s.ehlo()
        s.sendmail("interop@example.test", ["a@example.test", "b@example.test"], msg)
        s.quit()
        m = esp.wait_messages(1)[0]
        self.assertEqual(crlf(m.data), msg)
        self.assertEqual(m.meta["mail_from"], "interop@example.test")
        self.assertEqual(m.meta["rcpt_tos"], ["a@example.test", "b@example.test"])
        self.assertEqual(m.meta["auth_user"], USER)
        self.assertRegex(m.meta["tls_version"] or "", r"^TLSv1\.[23]$")
        self.assert_no_cleartext_auth(esp)
        self.note("aiosmtpd %s: delivered over %s" % (kind, m.meta["tls_version"]))

    def test_aiosmtpd_starttls(self):
        self.deliver("starttls")

    def test_aiosmtpd_implicit_tls(self):
        self.deliver("implicit")
