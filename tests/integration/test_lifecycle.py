"""test_lifecycle.py - process lifecycle and client timeouts (SPEC 2, 4):
SIGTERM with idle and stuck clients bounded by shutdown_timeout (421 4.3.2,
exit 0, nothing truncated delivered), SIGHUP with a configuration that
parses but cannot be set up, the privilege drop (`user`), and the
slow-drip client (a command line must be complete within command_timeout).

Complements test_cli.py (SIGTERM letting a DATA in flight finish, SIGHUP
with an unparsable file)."""

import os
import pwd
import re
import signal
import time

from lib import (SLOW, RelayTestCase, dot_stuff, make_message, upstream_for,
                 wait_for)


def is_root():
    return os.geteuid() == 0


def proc_ids(pid):
    """{'Uid': [r, e, s, fs], 'Gid': [...], 'Groups': [...]} of a process."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = [int(x) for x in val.split()]
            elif key in ("CapEff", "CapPrm"):
                out[key] = int(val, 16)
    return out


class Lifecycle(RelayTestCase):

    # ------------------------------------------------ SIGTERM and shutdown_timeout
    def test_sigterm_idle_client_gets_421_4_3_2_after_shutdown_timeout(self):
        esp, relay = self.esp_and_relay(relay_kw={"server": {"shutdown_timeout": "2s"}})
        relay.shutdown_timeout = 2.0
        c = self.raw(relay)
        self.greet(c)                       # connected, idle, no transaction
        t0 = time.monotonic()
        relay.terminate()
        r = c.reply_or_eof(timeout=10)
        dt = time.monotonic() - t0
        self.assertTrue(c.wait_eof(5), "connection not closed after shutdown_timeout")
        code = relay.wait_exit(5)
        self.note("idle client got %s %.2fs after SIGTERM; exit %s" % (
            r.lines if r else "EOF without a reply", dt, code))
        self.assertEqual(code, 0, "exit code after shutdown_timeout")
        self.assertTrue(1.5 <= dt <= 2.0 + 1.5 * SLOW,
                        "closed %.2fs after SIGTERM (shutdown_timeout = 2s)" % dt)
        self.assertIsNotNone(r, "closed without the 421 4.3.2 after SIGTERM "
                             "(unparsed bytes: %r)" % c.buf)
        self.assertEqual(r.code, 421, r)
        self.assertTrue(r.text.startswith("4.3.2"), r)

    def test_sigterm_stuck_data_not_delivered_truncated(self):
        # a client that stops sending in the middle of DATA when SIGTERM
        # comes: at shutdown_timeout it gets 421 4.3.2, the upstream is
        # dropped without the dot, nothing is stored, exit 0
        esp, relay = self.esp_and_relay(relay_kw={"server": {"shutdown_timeout": "2s"}})
        relay.shutdown_timeout = 2.0
        c = self.raw(relay)
        self.greet(c)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        body = dot_stuff(make_message("stuck at SIGTERM", size=32 * 1024))
        c.send(body[:20000])
        time.sleep(0.3)
        relay.terminate()
        r = c.reply_or_eof(timeout=10)
        self.assertEqual(relay.wait_exit(5), 0)
        conns = wait_for(lambda: [e for e in esp.conn_log() if "DATA" in e["cmds"]],
                         5 * SLOW, "the upstream session to end")
        self.assertTrue(conns[0]["end"].startswith(("eof", "read-error")), conns[0])
        self.assert_nothing_delivered(esp, 0.5)
        self.assertIsNotNone(r, "closed without the 421 4.3.2 (unparsed bytes: %r)" % c.buf)
        self.assertEqual((r.code, r.text[:5]), (421, "4.3.2"), r)

    # ------------------------------------------------ SIGHUP
    def test_sighup_bad_config_logged_old_config_serves(self):
        # two bad reloads: a CA file that does not exist (refused while the
        # file is read: file:line) and one that exists but holds no
        # certificate (refused while the new TLS contexts are built). Each
        # is logged; the running configuration keeps serving
        esp, relay = self.esp_and_relay()
        good = relay.config.read_text()
        junk = relay.dir / "junk-ca.pem"
        junk.write_text("not a certificate\n")
        logged = []
        for n, ca in enumerate((relay.dir / "no-such-ca.pem", junk), 1):
            bad = re.sub(r"(?m)^ca_file = .*$", "ca_file = %s" % ca, good).replace(
                "hostname = relay.test", "hostname = bad-reload.test")
            relay.config.write_text(bad)
            os.kill(relay.proc.pid, signal.SIGHUP)
            wait_for(lambda: relay.log_text().count("reload failed") >= n,
                     10 * SLOW, "reload failure %d in the log" % n)
            lines = [l for l in relay.log_text().splitlines() if ca.name in l]
            self.assertTrue(lines, "the log does not name %s" % ca.name)
            logged.append(lines[-1])
            self.assertTrue(relay.proc.alive(), "relay25 died on a bad reload")
            c = self.raw(relay)
            self.assertEqual(c.reply().lines, ["220 relay.test ESMTP relay25"])
            c.send(b"QUIT\r\n")
            s = self.smtp(relay)
            msg = make_message("after bad reload %d" % n)
            s.sendmail("s@example.test", ["r@example.test"], msg)
            s.quit()
            self.assertEqual(esp.wait_messages(n)[-1].data, msg)
        for l in logged:
            self.note("logged: %s" % l.strip())

    # ------------------------------------------------ privileges
    def test_privilege_drop_to_nobody(self):
        if not is_root():
            self.skipTest("not root")
        nobody = pwd.getpwnam("nobody")
        esp, relay = self.esp_and_relay(relay_kw={"server": {"user": "nobody"}})
        ids = proc_ids(relay.proc.pid)
        self.assertEqual(ids["Uid"], [nobody.pw_uid] * 4, ids)
        self.assertEqual(ids["Gid"], [nobody.pw_gid] * 4, ids)
        self.assertEqual(ids.get("Groups"), [nobody.pw_gid], ids)
        self.assertEqual((ids["CapEff"], ids["CapPrm"]), (0, 0), ids)
        self.assertIn("running as user nobody", relay.log_text())
        self.assertNotIn("running as root", relay.log_text())
        s = self.smtp(relay)
        msg = make_message("as nobody")
        s.sendmail("s@example.test", ["r@example.test"], msg)
        s.quit()
        self.assertEqual(esp.wait_messages(1)[0].data, msg)
        # a reload as nobody cannot read the root-owned 0600 file: logged,
        # and the running configuration keeps serving
        os.kill(relay.proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload failed" in relay.log_text() or
                 "configuration reloaded" in relay.log_text(), 10 * SLOW, "the reload")
        s = self.smtp(relay)
        s.sendmail("s@example.test", ["r@example.test"], make_message("as nobody 2"))
        s.quit()
        self.assertEqual(len(esp.wait_messages(2)), 2)
        reload = [l for l in relay.log_text().splitlines()
                  if "reload" in l and "SIGHUP" not in l]
        self.note("relay25 ids after start: %r" % ids)
        self.note("SIGHUP as nobody: %s" % (reload[-1].strip() if reload else "?"))

    def test_unknown_user_fails_to_start(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), start=False,
                                 server={"user": "no-such-user"})
        r = relay.run(timeout=15)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn("no-such-user", r.stderr)
        self.assertRegex(r.stderr, r"(?i)no such user")
        self.note("stderr: %s" % r.stderr.strip().splitlines()[-1])

    def test_root_without_user_warns(self):
        if not is_root():
            self.skipTest("not root")
        esp, relay = self.esp_and_relay()
        line = wait_for(lambda: re.search(r".*running as root.*", relay.log_text()),
                        5, "the running-as-root warning").group(0)
        self.assertRegex(line, r"(?i)warn")
        self.note("logged: %s" % line.strip())

    # ------------------------------------------------ command_timeout per line
    def drip(self, c, data, interval, limit):
        """Send data one byte every interval s until EOF or limit s; returns
        the seconds until relay25 closed (None if it never did)."""
        t0 = time.monotonic()
        for i in range(len(data)):
            if c.wait_eof(interval):
                return time.monotonic() - t0
            if time.monotonic() - t0 > limit:
                return None
            try:
                c.send(data[i:i + 1])
            except OSError:
                break
        return time.monotonic() - t0 if c.wait_eof(limit) else None

    def test_slow_drip_command_closed_at_command_timeout(self):
        # a command line must be complete within command_timeout (3s),
        # counted from the previous reply: one byte per second never
        # finishing the line gets 421 4.4.2 and the close
        esp, relay = self.esp_and_relay(relay_kw={"server": {"command_timeout": "3s"}})
        c = self.raw(relay)
        self.greet(c)
        line = b"MAIL FROM:<" + b"d" * 60
        dt = self.drip(c, line, 1.0, 15 * SLOW)
        self.assertIsNotNone(dt, "slow-drip client still connected after %.0fs"
                             % (15 * SLOW))
        r = c.reply_or_eof(timeout=1)
        self.assertIsNotNone(r, "closed without 421")
        self.assertEqual((r.code, r.text[:5]), (421, "4.4.2"), r)
        self.assertLessEqual(dt, 3.0 + 1.5 * SLOW,
                             "closed %.1fs after the command began (command_timeout 3s)" % dt)
        self.assertGreaterEqual(dt, 2.5)
        self.note("slow-drip command: 421 4.4.2 and closed %.1fs after its first byte" % dt)

    def test_slow_drip_greeting_phase(self):
        # the same before EHLO: the timer runs from the greeting
        esp, relay = self.esp_and_relay(relay_kw={"server": {"command_timeout": "3s"}})
        c = self.raw(relay)
        self.assertEqual(c.reply().code, 220)
        dt = self.drip(c, b"EHLO " + b"h" * 60, 1.0, 15 * SLOW)
        self.assertIsNotNone(dt, "slow-drip EHLO still connected")
        self.assertLessEqual(dt, 3.0 + 1.5 * SLOW)
        r = c.reply_or_eof(timeout=1)
        self.assertIsNotNone(r)
        self.assertEqual((r.code, r.text[:5]), (421, "4.4.2"), r)

    def test_slow_but_complete_commands_keep_the_session(self):
        # positive control: every line complete within command_timeout
        # (3s), 2s apart, 4 times: the session stays and delivers
        esp, relay = self.esp_and_relay(relay_kw={"server": {"command_timeout": "3s"}})
        c = self.raw(relay)
        self.greet(c)
        for i in range(4):
            time.sleep(2.0)
            self.assertEqual(c.cmd("NOOP").code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        msg = make_message("slow but complete")
        c.send(dot_stuff(msg))
        self.assertEqual(c.reply().code, 250)
        c.cmd("QUIT")
        self.assertEqual(esp.wait_messages(1)[0].data, msg)
