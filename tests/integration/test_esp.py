"""test_esp.py - the test ESP tested against itself (no relay25 involved), so
that a relay25 test failure can be trusted to be relay25's."""

import smtplib
import socket
import ssl
import time

from lib import (CLIENT_NAME, PASSWORD, USER, RawClient, RelayTestCase, b64,
                 certs, crlf, dot_stuff, make_message, wait_for)


def tls_ctx():
    return ssl.create_default_context(cafile=str(certs() / "ca.pem"))


class ESPSelfTest(RelayTestCase):

    def client(self, esp, kind="starttls", login=True):
        if kind == "implicit":
            s = smtplib.SMTP_SSL("127.0.0.1", esp.port(kind), local_hostname=CLIENT_NAME,
                                 timeout=20, context=tls_ctx())
        else:
            s = smtplib.SMTP("127.0.0.1", esp.port(kind), local_hostname=CLIENT_NAME,
                             timeout=20)
        self.addCleanup(self._close_smtp, s)
        s.ehlo()
        if kind == "starttls":
            s.starttls(context=tls_ctx())
            s.ehlo()
        if login:
            s.login(USER, PASSWORD)
        return s

    def test_starttls_and_implicit_delivery(self):
        esp = self.start_esp(kinds=("starttls", "implicit"))
        msg = make_message("esp self", body_lines=[".leading dot", "8bit: \u00e9\u00e8", "", "."])
        for kind in ("starttls", "implicit"):
            s = self.client(esp, kind)
            self.assertIn("auth", s.esmtp_features)
            s.sendmail("a@example.test", ["b@example.test", "c@example.test"], msg,
                       mail_options=["BODY=8BITMIME"])
            s.quit()
        got = esp.wait_messages(2)
        for m, kind in zip(got, ("starttls", "implicit")):
            self.assertEqual(m.data, msg)
            self.assertEqual(m.meta["mail_from"], "a@example.test")
            self.assertEqual(m.meta["rcpt_tos"], ["b@example.test", "c@example.test"])
            self.assertEqual(m.meta["mail_options"], ["size=%d" % len(msg), "BODY=8BITMIME"])
            self.assertEqual(m.meta["auth_user"], USER)
            self.assertEqual(m.meta["kind"], kind)
            self.assertTrue(m.meta["tls_version"].startswith("TLS"))
        self.assertEqual([(e["user"], e["tls"], e["ok"]) for e in esp.auth_log()],
                         [(USER, True, True)] * 2)
        self.assertNotEqual(got[0].meta["queue_id"], got[1].meta["queue_id"])

    def test_ehlo_before_and_after_tls(self):
        esp = self.start_esp()
        s = smtplib.SMTP("127.0.0.1", esp.port(), local_hostname=CLIENT_NAME, timeout=20)
        self.addCleanup(self._close_smtp, s)
        s.ehlo()
        for ext in ("pipelining", "8bitmime", "enhancedstatuscodes", "size", "starttls"):
            self.assertIn(ext, s.esmtp_features)
        self.assertNotIn("auth", s.esmtp_features)
        code, text = s.mail("a@example.test")
        self.assertEqual(code, 530)
        s.starttls(context=tls_ctx())
        s.ehlo()
        self.assertNotIn("starttls", s.esmtp_features)
        self.assertEqual(s.esmtp_features["auth"].split(), ["PLAIN", "LOGIN"])
        code, text = s.mail("a@example.test")
        self.assertEqual((code, text[:5]), (530, b"5.7.0"))
        self.assertRaises(smtplib.SMTPAuthenticationError, s.login, USER, "wrong")
        self.assertIn({"user": USER, "tls": True, "ok": False, "mech": "PLAIN", "conn": 1},
                      esp.auth_log())

    def test_auth_before_tls_is_logged_as_cleartext(self):
        esp = self.start_esp()
        c = RawClient(esp.port())
        self.addCleanup(c.close)
        self.greet(c)
        r = c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (USER, PASSWORD)))
        self.assertEqual(r.code, 538)
        log = esp.auth_log()
        self.assertTrue(any(e.get("leak") for e in log), log)
        self.assertTrue(any(e["user"] == USER and e["tls"] is False for e in log), log)
        self.assertRaises(AssertionError, self.assert_no_cleartext_auth, esp)

    def test_pipelined_in_one_write_and_bytewise(self):
        esp = self.start_esp(kinds=("plain",), user=None)
        msg = make_message("pipelined", body_lines=["x"])
        seq = (b"EHLO c.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
               b"RCPT TO:<c@example.test>\r\nDATA\r\n" + dot_stuff(msg) +
               b"NOOP\r\nRSET\r\nQUIT\r\n")
        for bytewise in (False, True):
            c = RawClient(esp.port("plain"))
            self.addCleanup(c.close)
            self.assertEqual(c.reply().code, 220)
            if bytewise:
                c.send_bytewise(seq)
            else:
                c.send(seq)
            codes = [c.reply().code for _ in range(8)]
            self.assertEqual(codes, [250, 250, 250, 250, 354, 250, 250, 250])
            self.assertEqual(c.reply().code, 221)
            self.assertTrue(c.wait_eof(5))
        got = esp.wait_messages(2)
        self.assertEqual([m.data for m in got], [msg, msg])

    def test_plaintext_after_starttls_is_dropped(self):
        esp = self.start_esp()
        sock = socket.create_connection(("127.0.0.1", esp.port()), timeout=10)
        self.addCleanup(sock.close)
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO c.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        sock.sendall(b"STARTTLS\r\nNOOP\r\n")      # injected NOOP
        self.assertTrue(f.readline().startswith(b"220 "))
        tls = tls_ctx().wrap_socket(sock, server_hostname="localhost")
        tls.sendall(b"EHLO c.test\r\n")
        tf = tls.makefile("rb")
        lines = []
        while True:
            line = tf.readline()
            lines.append(line)
            if line[3:4] == b" ":
                break
        self.assertTrue(lines[0].startswith(b"250-"), lines)   # not a NOOP reply
        tls.sendall(b"QUIT\r\n")
        self.assertTrue(tf.readline().startswith(b"221"))
        tls.close()
        conn = wait_for(lambda: [e for e in esp.conn_log() if e["conn"] == 1], 5, "conn.log")
        self.assertEqual(conn[0]["plaintext_after_starttls"], len(b"NOOP\r\n"))

    def test_long_line_and_reject_rcpt(self):
        esp = self.start_esp(kinds=("plain",), user=None, reject_rcpt=["bad@example.test"])
        c = RawClient(esp.port("plain"))
        self.addCleanup(c.close)
        self.greet(c)
        r = c.cmd("NOOP " + "x" * 100000)
        self.assertEqual((r.code, r.text[:5]), (500, "5.5.2"))
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>").code, 250)
        r = c.cmd("RCPT TO:<bad@example.test>")
        self.assertEqual((r.code, r.text[:5]), (550, "5.1.1"))
        self.assertEqual(c.cmd("RCPT TO:<good@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(dot_stuff(b"Subject: x\r\n\r\nhi\r\n"))
        r = c.reply()
        self.assertEqual(r.code, 250)
        self.assertRegex(r.text, r"^2\.0\.0 Ok: queued as [0-9A-F]+$")
        m = esp.wait_messages(1)[0]
        self.assertEqual(m.meta["rcpt_tos"], ["good@example.test"])
        self.assertEqual(m.meta["queue_id"], r.text.split()[-1])

    def test_large_message_sha256(self):
        esp = self.start_esp(kinds=("plain",), user=None)
        msg = make_message("big", size=5 * 1024 * 1024)
        s = smtplib.SMTP("127.0.0.1", esp.port("plain"), local_hostname=CLIENT_NAME,
                         timeout=60)
        self.addCleanup(self._close_smtp, s)
        t0 = time.monotonic()
        s.sendmail("a@example.test", ["b@example.test"], msg)
        self.note("ESP took 5 MiB in %.2fs" % (time.monotonic() - t0))
        import hashlib
        m = esp.wait_messages(1)[0]
        self.assertEqual(m.meta["sha256"], hashlib.sha256(msg).hexdigest())
        self.assertEqual(m.meta["size"], len(msg))

    # ------------------------------------------------------------- faults
    def test_fault_refuse(self):
        esp = self.start_esp(faults=["refuse"])
        self.assertRaises(ConnectionRefusedError, socket.create_connection,
                          ("127.0.0.1", esp.port()), 5)

    def test_fault_close_after_banner_and_ehlo(self):
        esp = self.start_esp(faults=["close-after-banner@1", "close-after-ehlo"])
        c = RawClient(esp.port())
        self.addCleanup(c.close)
        self.assertEqual(c.reply().code, 220)
        self.assertTrue(c.wait_eof(5))
        c2 = RawClient(esp.port())
        self.addCleanup(c2.close)
        self.greet(c2)
        self.assertTrue(c2.wait_eof(5))

    def test_fault_stall_banner(self):
        esp = self.start_esp(faults=["stall-banner"])
        c = RawClient(esp.port())
        self.addCleanup(c.close)
        self.assertRaises(AssertionError, c.reply, 1.0)
        self.assertFalse(c.eof)

    def test_fault_bad_tls(self):
        esp = self.start_esp(kinds=("starttls", "implicit"), faults=["bad-tls"])
        self.assertRaises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected),
                          smtplib.SMTP_SSL, "127.0.0.1", esp.port("implicit"),
                          local_hostname=CLIENT_NAME, timeout=5, context=tls_ctx())
        s = smtplib.SMTP("127.0.0.1", esp.port(), local_hostname=CLIENT_NAME, timeout=5)
        self.addCleanup(self._close_smtp, s)
        self.assertRaises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected),
                          s.starttls, context=tls_ctx())

    def test_fault_auth_fail_and_tempfail_mail(self):
        esp = self.start_esp(faults=["auth-fail@2", "tempfail-mail"])
        self.assertRaises(smtplib.SMTPAuthenticationError, self.client, esp)
        s = self.client(esp)
        code, text = s.mail("a@example.test")
        self.assertEqual((code, text[:5]), (451, b"4.3.0"))

    def test_fault_close_mid_data_and_reject_data(self):
        esp = self.start_esp(faults=["close-mid-data:5000@1", "reject-data@1"])
        msg = make_message("mid", size=50000)
        s = self.client(esp)
        self.assertRaises(smtplib.SMTPException, s.sendmail,
                          "a@example.test", ["b@example.test"], msg)
        s = self.client(esp)
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            s.sendmail("a@example.test", ["b@example.test"], msg)
        self.assertEqual(cm.exception.smtp_code, 554)
        s = self.client(esp)
        s.sendmail("a@example.test", ["b@example.test"], msg)
        self.assertEqual(len(esp.wait_messages(1)), 1)
        self.assertEqual(esp.messages()[0].data, msg)
        self.assertTrue(any(e["end"] == "fault:close-mid-data" for e in esp.conn_log()))

    def test_fault_file_at_runtime(self):
        esp = self.start_esp()
        esp.set_faults(["tempfail-mail"])
        s = self.client(esp)
        self.assertEqual(s.mail("a@example.test")[0], 451)
        esp.set_faults([])
        s = self.client(esp)
        self.assertEqual(s.mail("a@example.test")[0], 250)

    def test_client_drop_mid_data_stores_nothing(self):
        esp = self.start_esp(kinds=("plain",), user=None)
        c = RawClient(esp.port("plain"))
        self.greet(c)
        c.cmd("MAIL FROM:<a@example.test>")
        c.cmd("RCPT TO:<b@example.test>")
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(b"Subject: x\r\n\r\npartial\r\n")
        c.close()
        self.assert_nothing_delivered(esp, 1.0)
        self.assertEqual(wait_for(esp.conn_log, 5, "conn.log")[-1]["end"], "eof")
        self.assertEqual(crlf(b"a\nb\r\n"), b"a\r\nb\r\n")

    def test_lenient_eod_is_smuggling_prone_strict_is_not(self):
        # the smuggling tests rely on --eod lenient really splitting this
        body = (b"Subject: s\r\n\r\nbefore\n.\nMAIL FROM:<evil@example.test>\r\n"
                b"RCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n"
                b"evil\r\n.\r\n")
        for mode, expect in (("lenient", 2), ("strict", 1)):
            esp = self.start_esp(name="esp-" + mode, kinds=("plain",), user=None,
                                 extra_args=["--eod", mode])
            c = RawClient(esp.port("plain"))
            self.addCleanup(c.close)
            self.greet(c)
            c.cmd("MAIL FROM:<honest@example.test>")
            c.cmd("RCPT TO:<r@example.test>")
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(body)
            for _ in range(expect + (3 if expect == 2 else 0)):
                c.reply()
            got = esp.wait_messages(expect)
            self.assertEqual(len(got), expect, mode)
            if expect == 2:
                self.assertEqual(got[1].meta["mail_from"], "evil@example.test")
            else:
                self.assertEqual(got[0].meta["bare_lf"], 2)
