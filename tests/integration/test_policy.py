"""test_policy.py - relay25 is no open relay (SPEC 2, issue 3): the sender
policy (allowed_senders) and inbound AUTH (auth_users_file) with PLAIN and
LOGIN, over raw sockets, smtplib and swaks; no credential in the log."""

import base64
import os
import re
import signal
import smtplib
import subprocess
import time

from lib import (CLIENT_NAME, RelayTestCase, dot_stuff, make_message,
                 relay25_bin, upstream_for, wait_for)

APP_USER = "app@example.test"
APP_PASS = "In-b0und pässword!"       # a space and 8-bit text on purpose
OTHER_USER = "cron"
OTHER_PASS = "cron-Secret-42"


def crypt_hash(password):
    """A $6$ (SHA-512) crypt hash, made by openssl (the password goes in on
    stdin, not on the command line)."""
    p = subprocess.run(["openssl", "passwd", "-6", "-stdin"],
                       input=password.encode() + b"\n", capture_output=True,
                       check=True, timeout=30)
    h = p.stdout.decode().strip()
    assert h.startswith("$6$"), h
    return h


def ehlo_keywords(reply):
    out = {}
    for line in reply.lines[1:]:
        kw, _, params = line[4:].partition(" ")
        out[kw.upper()] = params
    return out


def plain(user, password, authzid=""):
    return base64.b64encode(("%s\0%s\0%s" % (authzid, user, password))
                            .encode()).decode()


def b64u(s):
    return base64.b64encode(s.encode()).decode()


class Policy(RelayTestCase):

    # ---- helpers

    def users_file(self, users, mode=0o600, name="users"):
        path = self.tmp / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write("# relay25 users\n\n")
            for u, pw in users:
                f.write("%s:%s\n" % (u, crypt_hash(pw)))
        os.chmod(path, mode)
        return path

    def auth_relay(self, users=((APP_USER, APP_PASS),), server=None):
        esp = self.start_esp()
        srv = {"auth_users_file": str(self.users_file(users))}
        srv.update(server or {})
        relay = self.start_relay(upstream_for(esp), server=srv)
        self.addCleanup(self.check_no_inbound_secrets, relay)
        return esp, relay

    def check_no_inbound_secrets(self, relay):
        """No password, and no AUTH payload, in relay25's debug log."""
        text = relay.log_text()
        for user, pw in ((APP_USER, APP_PASS), (OTHER_USER, OTHER_PASS),
                         (APP_USER, "wrong-password")):
            for secret in (pw, b64u(pw), plain(user, pw), b64u(user)):
                self.assertNotIn(secret, text, "a credential in relay25's log")

    def send_one(self, c, sender, rcpt="rcpt@example.test", subject="policy"):
        """MAIL, RCPT, DATA, message on an open raw client; the reply to
        MAIL if it is not 250, else the reply to the end of data."""
        r = c.cmd("MAIL FROM:<%s>" % sender)
        if r.code != 250:
            return r
        self.assertEqual(c.cmd("RCPT TO:<%s>" % rcpt).code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(dot_stuff(make_message(subject, sender=sender or "x@y")))
        return c.reply()

    # ---- sender policy

    def test_allowed_senders_accept_and_deny(self):
        esp, relay = self.esp_and_relay(relay_kw={"server": {
            "allowed_senders": "*@example.test alerts@host.example "
                               "*@*.example.org <>"}})
        c = self.raw(relay)
        self.greet(c)
        # allowed: domain, case-insensitive exact address, subdomain, <>
        for sender in ("app@example.test", "ALERTS@Host.Example",
                       "x@mx.example.org", ""):
            r = self.send_one(c, sender, subject="ok %s" % sender)
            self.assertEqual(r.code, 250, (sender, r))
        # denied, and the session stays usable
        for sender in ("evil@other.test", "app@example.test.evil",
                       "x@example.org", "alerts@host.example.com"):
            r = c.cmd("MAIL FROM:<%s>" % sender)
            self.assert_code(r, 550, "5.7.1")
            self.assertIn("Sender not allowed", r.text)
            self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 503)
        self.assertEqual(self.send_one(c, "late@example.test").code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        got = esp.wait_messages(5)
        time.sleep(0.5)
        got = esp.messages()
        self.assertEqual(sorted(m.meta["mail_from"] for m in got),
                         sorted(["app@example.test", "ALERTS@Host.Example",
                                 "x@mx.example.org", "", "late@example.test"]))
        log = relay.log_text()
        m = re.search(r"session=([0-9a-f]{12}) client=\S+ status=refused "
                      r"from=<evil@other\.test> reason=\"sender not in "
                      r"allowed_senders\"", log)
        self.assertTrue(m, log[-3000:])

    def test_allowed_senders_star_excludes_null_sender(self):
        esp, relay = self.esp_and_relay(relay_kw={"server": {
            "allowed_senders": "*"}})
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<>"), 550, "5.7.1")
        self.assertEqual(self.send_one(c, "anyone@anywhere.test").code, 250)
        c.cmd("QUIT")
        self.assertEqual(len(esp.wait_messages(1)), 1)

    def test_denied_sender_with_smtplib(self):
        esp, relay = self.esp_and_relay(relay_kw={"server": {
            "allowed_senders": "*@example.test"}})
        s = self.smtp(relay)
        with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
            s.sendmail("spam@bad.test", ["r@example.test"], make_message("deny"))
        self.assertEqual(cm.exception.smtp_code, 550)
        s.sendmail("ok@EXAMPLE.test", ["r@example.test"], make_message("allow"))
        s.quit()
        got = esp.wait_messages(1)
        self.assert_nothing_delivered_beyond(esp, 1)
        self.assertEqual(got[0].meta["mail_from"], "ok@EXAMPLE.test")

    def assert_nothing_delivered_beyond(self, esp, n, wait=1.0):
        time.sleep(wait)
        self.assertEqual(len(esp.messages()), n, esp.messages())

    # ---- inbound AUTH

    def test_ehlo_offers_auth_only_when_configured(self):
        esp = self.start_esp()
        plain_relay = self.start_relay(upstream_for(esp))
        c = self.raw(plain_relay)
        kw = ehlo_keywords(self.greet(c))
        self.assertNotIn("AUTH", kw)
        self.assert_code(c.cmd("AUTH PLAIN " + plain(APP_USER, APP_PASS)), 502)
        self.assertEqual(self.send_one(c, "s@example.test").code, 250)
        c.cmd("QUIT")
        self.assertIn("AUTH ********", plain_relay.log_text())
        self.assertNotIn(plain(APP_USER, APP_PASS), plain_relay.log_text())

        auth_relay = self.start_relay(upstream_for(esp), server={
            "auth_users_file": str(self.users_file([(APP_USER, APP_PASS)]))})
        c = self.raw(auth_relay)
        kw = ehlo_keywords(self.greet(c))
        self.assertEqual(kw.get("AUTH"), "PLAIN LOGIN")
        c.cmd("QUIT")

    def test_auth_required_then_plain_initial_response(self):
        esp, relay = self.auth_relay()
        c = self.raw(relay)
        self.greet(c)
        r = c.cmd("MAIL FROM:<s@example.test>")
        self.assert_code(r, 530, "5.7.0")
        self.assertIn("Authentication required", r.text)
        self.assert_code(c.cmd("RCPT TO:<r@example.test>"), 503)
        r = c.cmd("AUTH PLAIN " + plain(APP_USER, APP_PASS))
        self.assert_code(r, 235, "2.7.0")
        self.assertIn("Authentication successful", r.text)
        self.assertEqual(self.send_one(c, "s@example.test", subject="after auth").code, 250)
        # authenticated for the rest of the session, across RSET and EHLO
        self.assertEqual(c.cmd("RSET").code, 250)
        self.assertEqual(c.cmd("EHLO " + CLIENT_NAME).code, 250)
        self.assertEqual(self.send_one(c, "s2@example.test").code, 250)
        self.assert_code(c.cmd("AUTH PLAIN " + plain(APP_USER, APP_PASS)), 503, "5.5.1")
        self.assertEqual(c.cmd("QUIT").code, 221)
        got = esp.wait_messages(2)
        self.assertEqual([m.meta["mail_from"] for m in got],
                         ["s@example.test", "s2@example.test"])
        log = relay.log_text()
        self.assertIn("AUTH ********", log)
        self.assertRegex(log, r"session=[0-9a-f]{12} client=\S+ authenticated "
                              r"user=\"app@example\.test\"")

    def test_auth_plain_continuation(self):
        esp, relay = self.auth_relay()
        c = self.raw(relay)
        self.greet(c)
        r = c.cmd("AUTH PLAIN")
        self.assertEqual(r.lines, ["334 "])
        self.assert_code(c.cmd(plain(APP_USER, APP_PASS)), 235, "2.7.0")
        self.assertEqual(self.send_one(c, "s@example.test").code, 250)
        c.cmd("QUIT")
        self.assertEqual(len(esp.wait_messages(1)), 1)
        self.assertIn("<<< ********", relay.log_text())

    def test_auth_plain_pipelined_and_bytewise(self):
        # the whole dialogue in one write, then one byte at a time
        esp, relay = self.auth_relay()
        for bytewise in (False, True):
            c = self.raw(relay)
            self.assertEqual(c.reply().code, 220)
            data = ("EHLO %s\r\nAUTH PLAIN\r\n%s\r\nMAIL FROM:<p@example.test>\r\n"
                    "RCPT TO:<r@example.test>\r\nDATA\r\n" % (
                        CLIENT_NAME, plain(APP_USER, APP_PASS))).encode()
            (c.send_bytewise if bytewise else c.send)(data)
            self.assertEqual([c.reply().code for _ in range(6)],
                             [250, 334, 235, 250, 250, 354])
            c.send(dot_stuff(make_message("pipelined %s" % bytewise)))
            self.assertEqual(c.reply().code, 250)
            c.cmd("QUIT")
        self.assertEqual(len(esp.wait_messages(2)), 2)

    def test_auth_login_raw(self):
        esp, relay = self.auth_relay()
        c = self.raw(relay)
        self.greet(c)
        self.assertEqual(c.cmd("AUTH LOGIN").lines, ["334 VXNlcm5hbWU6"])
        self.assertEqual(c.cmd(b64u(APP_USER)).lines, ["334 UGFzc3dvcmQ6"])
        self.assert_code(c.cmd(b64u(APP_PASS)), 235, "2.7.0")
        self.assertEqual(self.send_one(c, "login@example.test").code, 250)
        c.cmd("QUIT")
        # LOGIN with the user name as initial response (as smtplib sends it)
        c = self.raw(relay)
        self.greet(c)
        self.assertEqual(c.cmd("auth login " + b64u(APP_USER)).lines,
                         ["334 UGFzc3dvcmQ6"])
        self.assert_code(c.cmd(b64u(APP_PASS)), 235)
        c.cmd("QUIT")
        self.assertEqual(len(esp.wait_messages(1)), 1)

    def test_auth_smtplib(self):
        esp, relay = self.auth_relay(users=[(APP_USER, APP_PASS),
                                            (OTHER_USER, OTHER_PASS)])
        # smtplib's choice (PLAIN with initial response); smtplib encodes
        # credentials as ASCII, so the ASCII user
        s = self.smtp(relay)
        s.login(OTHER_USER, OTHER_PASS)
        s.sendmail("a@example.test", ["r@example.test"], make_message("smtplib plain"))
        s.quit()
        # LOGIN, with and without the initial response
        for initial in (True, False):
            s = self.smtp(relay)
            s.ehlo()
            s.user, s.password = OTHER_USER, OTHER_PASS
            code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=initial)
            self.assertEqual(code, 235)
            s.sendmail("b@example.test", ["r@example.test"],
                       make_message("smtplib login %s" % initial))
            s.quit()
        got = esp.wait_messages(3)
        self.assertEqual([m.meta["mail_from"] for m in got],
                         ["a@example.test", "b@example.test", "b@example.test"])

    def test_auth_swaks_login_and_plain(self):
        esp, relay = self.auth_relay()
        for mech in ("LOGIN", "PLAIN"):
            argv = ["swaks", "--server", "127.0.0.1:%d" % relay.port,
                    "--ehlo", CLIENT_NAME, "--from", "swaks@example.test",
                    "--to", "r@example.test", "-a", mech,
                    "--auth-user", APP_USER, "--auth-password", APP_PASS,
                    "--header", "Subject: swaks %s" % mech, "--timeout", "30"]
            p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("235 2.7.0", p.stdout)
        got = esp.wait_messages(2)
        self.assertEqual(len(got), 2)

    def test_auth_failures(self):
        esp, relay = self.auth_relay()
        c = self.raw(relay)
        self.assertEqual(c.reply().code, 220)
        self.assert_code(c.cmd("AUTH PLAIN " + plain(APP_USER, APP_PASS)), 503,
                         "5.5.1")                        # before EHLO
        self.assertEqual(c.cmd("EHLO " + CLIENT_NAME).code, 250)
        # wrong password, unknown user, other user's authzid
        for msg in (plain(APP_USER, "wrong-password"),
                    plain("nobody@example.test", APP_PASS),
                    plain(APP_USER, APP_PASS, authzid="boss@example.test")):
            r = c.cmd("AUTH PLAIN " + msg)
            self.assert_code(r, 535, "5.7.8")
            self.assertIn("Authentication credentials invalid", r.text)
        # an authzid equal to the user is fine, later
        # LOGIN with a wrong password
        c.cmd("AUTH LOGIN")
        c.cmd(b64u(APP_USER))
        self.assert_code(c.cmd(b64u("wrong-password")), 535, "5.7.8")
        # cancel, bad base64, malformed PLAIN, unknown mechanism, syntax
        self.assertEqual(c.cmd("AUTH LOGIN").code, 334)
        self.assert_code(c.cmd("*"), 501, "5.0.0")
        self.assertEqual(c.cmd("AUTH PLAIN").code, 334)
        self.assert_code(c.cmd("*"), 501, "5.0.0")
        self.assertEqual(c.cmd("AUTH PLAIN").code, 334)
        self.assert_code(c.cmd("not base64!"), 501, "5.5.2")
        self.assert_code(c.cmd("AUTH PLAIN =&="), 501, "5.5.2")
        self.assert_code(c.cmd("AUTH PLAIN " + b64u("no-nuls-here")), 501, "5.5.2")
        self.assert_code(c.cmd("AUTH PLAIN ="), 501, "5.5.2")
        self.assert_code(c.cmd("AUTH CRAM-MD5"), 504, "5.5.4")
        self.assert_code(c.cmd("AUTH"), 501, "5.5.4")
        # still not authenticated; the session is still usable
        self.assert_code(c.cmd("MAIL FROM:<s@example.test>"), 530, "5.7.0")
        self.assertEqual(c.cmd("NOOP").code, 250)
        self.assert_code(c.cmd("AUTH PLAIN " + plain(APP_USER, APP_PASS, APP_USER)),
                         235)
        self.assertEqual(self.send_one(c, "s@example.test").code, 250)
        # AUTH inside a transaction: 503
        self.assertEqual(c.cmd("MAIL FROM:<t@example.test>").code, 250)
        self.assert_code(c.cmd("AUTH PLAIN " + plain(APP_USER, APP_PASS)), 503, "5.5.1")
        c.cmd("QUIT")
        self.assertEqual(len(esp.wait_messages(1)), 1)
        log = relay.log_text()
        self.assertRegex(log, r"session=[0-9a-f]{12} client=\S+ authentication "
                              r"failed user=\"app@example\.test\"")
        self.assertRegex(log, r"authentication failed user=\"nobody@example\.test\"")

    def test_auth_failures_count_toward_error_limit(self):
        esp, relay = self.auth_relay()
        c = self.raw(relay)
        self.greet(c)
        for i in range(19):
            self.assert_code(c.cmd("AUTH PLAIN " + plain(APP_USER, "wrong-password")), 535)
        r = c.cmd("AUTH PLAIN " + plain(APP_USER, "wrong-password"))
        self.assert_code(r, 535)
        r = c.reply()
        self.assert_code(r, 421, "4.7.0")
        self.assertTrue(c.wait_eof())
        self.assert_nothing_delivered(esp, 0.5)

    def test_auth_line_too_long(self):
        esp, relay = self.auth_relay()
        c = self.raw(relay)
        self.greet(c)
        self.assertEqual(c.cmd("AUTH PLAIN").code, 334)
        self.assert_code(c.cmd("QUFB" * 1200), 500, "5.5.6")
        self.assert_code(c.cmd("MAIL FROM:<s@example.test>"), 530)
        self.assert_code(c.cmd("AUTH PLAIN " + plain(APP_USER, APP_PASS)), 235)
        c.cmd("QUIT")

    def test_auth_and_sender_policy_together(self):
        esp, relay = self.auth_relay(server={"allowed_senders": "*@example.test"})
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<x@other.test>"), 530)
        self.assert_code(c.cmd("AUTH PLAIN " + plain(APP_USER, APP_PASS)), 235)
        self.assert_code(c.cmd("MAIL FROM:<x@other.test>"), 550, "5.7.1")
        self.assertEqual(self.send_one(c, "x@example.test").code, 250)
        c.cmd("QUIT")
        self.assertEqual([m.meta["mail_from"] for m in esp.wait_messages(1)],
                         ["x@example.test"])

    def test_users_file_reloaded_on_sighup(self):
        esp, relay = self.auth_relay()
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("AUTH PLAIN " + plain(OTHER_USER, OTHER_PASS)), 535)
        c.cmd("QUIT")
        self.users_file([(APP_USER, APP_PASS), (OTHER_USER, OTHER_PASS)])
        n = relay.log_text().count("configuration reloaded")
        os.kill(relay.proc.pid, signal.SIGHUP)
        wait_for(lambda: relay.log_text().count("configuration reloaded") > n,
                 10, "relay25 to reload")
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("AUTH PLAIN " + plain(OTHER_USER, OTHER_PASS)), 235)
        self.assertEqual(self.send_one(c, "cron@example.test").code, 250)
        c.cmd("QUIT")
        self.assertEqual(len(esp.wait_messages(1)), 1)

    def test_bad_users_file_refuses_to_start(self):
        esp = self.start_esp()
        bad = self.tmp / "bad-users"
        bad.write_text("app:plaintext-password\n")
        os.chmod(bad, 0o644)
        p = subprocess.run([relay25_bin(), "-t", "-c", str(self.write_ini(esp, bad))],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("%s:1: user 'app': not a modular crypt(3) hash" % bad, p.stderr)
        self.assertNotIn("plaintext-password", p.stdout + p.stderr)

    def write_ini(self, esp, users):
        ini = self.tmp / "t.ini"
        u = upstream_for(esp)
        lines = ["[server]", "auth_users_file = %s" % users, "", "[upstream]"]
        lines += ["%s = %s" % (k, v) for k, v in u.items() if v is not None and k != "name"]
        fd = os.open(ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return ini
