"""test_auth_mechs.py - the AUTH mechanisms providers require now (issue 6):
XOAUTH2 with token_command, OAUTHBEARER with token_file, CRAM-MD5 (and
when auth = auto picks it), a stale token or a rotated password answered
by running the command again and retrying on the same connection within
the client's transaction, a slow token command that delays nobody else,
a failing command (451, its output never logged), and no secret in
relay25's debug log.

The background probe relay25 runs at start-up would authenticate first and
warm the secret cache; tests that must see the first AUTH inside the
client's transaction make the probe's connection fail before AUTH with the
ESP fault close-after-banner@1 and wait for it to end.
"""

import os
import threading
import time

from lib import (PASSWORD, SLOW, USER, RelayTestCase, make_message, upstream_for,
                 wait_for)


class AuthMechs(RelayTestCase):

    # ------------------------------------------------------------ helpers
    def script(self, name, body):
        """An executable sh script in the test directory; returns the
        command line for token_command / password_command."""
        path = self.tmp / name
        path.write_text("#!/bin/sh\n" + body)
        os.chmod(path, 0o700)
        return "sh %s" % path

    def counting_script(self, name, output):
        """A script that counts its runs in <name>.count and prints
        `output` with $n replaced by the run number (shell syntax)."""
        counter = self.tmp / (name + ".count")
        cmd = self.script(name, 'n=$(cat "%s" 2>/dev/null || echo 0)\n'
                          'n=$((n+1))\necho $n > "%s"\n%s\n'
                          % (counter, counter, output))
        return cmd, counter

    @staticmethod
    def runs(counter):
        try:
            return int(counter.read_text().strip())
        except (OSError, ValueError):
            return 0

    def send(self, relay, subject):
        s = self.smtp(relay)
        refused = s.sendmail("sender@example.test", ["rcpt@example.test"],
                             make_message(subject))
        self.assertEqual(refused, {})
        s.quit()

    def token_upstream(self, esp, mech, **kw):
        return upstream_for(esp, password=None, auth=mech, **kw)

    def without_probe(self, esp):
        """Wait until the start-up probe's connection (closed after the
        banner by close-after-banner@1) is over."""
        wait_for(lambda: len(esp.conn_log()) >= 1, 10 * SLOW,
                 "the probe's connection to end")
        self.assertEqual(esp.auth_log(), [], "the probe authenticated")

    # ------------------------------------------------------------ XOAUTH2
    def test_xoauth2_token_command(self):
        token = "ya29.test-Access_Token.%d" % os.getpid()
        esp = self.start_esp(extra_args=["--oauth-token", token])
        cmd, counter = self.counting_script("token", 'echo "%s 3600"' % token)
        self.add_secret(token, USER)
        relay = self.start_relay(self.token_upstream(esp, "xoauth2",
                                                     token_command=cmd))
        self.send(relay, "xoauth2")
        msgs = esp.wait_messages(1)
        self.assertEqual(msgs[0].meta["auth_user"], USER)
        auths = [e for e in esp.auth_log() if e.get("mech") == "XOAUTH2"]
        self.assertTrue(auths and all(e["ok"] and e["tls"] for e in auths), auths)
        # probe and client share one cached token: one run
        self.send(relay, "xoauth2 again")
        esp.wait_messages(2)
        self.assertEqual(self.runs(counter), 1)
        self.assert_no_cleartext_auth(esp)

    # ------------------------------------------------------------ OAUTHBEARER
    def test_oauthbearer_token_file(self):
        token = "bearer-from-file-%d" % os.getpid()
        tf = self.tmp / "token"
        tf.write_text(token + "\n")
        os.chmod(tf, 0o600)
        esp = self.start_esp(extra_args=["--oauth-token", token])
        self.add_secret(token, USER)
        relay = self.start_relay(self.token_upstream(esp, "oauthbearer",
                                                     token_file=str(tf)))
        self.send(relay, "oauthbearer")
        esp.wait_messages(1)
        auths = [e for e in esp.auth_log() if e.get("mech") == "OAUTHBEARER"]
        self.assertTrue(auths, esp.auth_log())
        for e in auths:
            self.assertTrue(e["ok"], e)
            self.assertEqual(e["user"], USER)
            self.assertEqual(e["host"], "localhost")
            self.assertEqual(e["port"], str(esp.port()))

        # the file changes (a cron job renewed the token): re-read
        token2 = token + "-renewed"
        self.add_secret(token2, USER)
        esp.stop()
        esp2 = self.start_esp(name="esp-renewed",
                              extra_args=["--oauth-token", token2])
        relay2 = self.start_relay(self.token_upstream(esp2, "oauthbearer",
                                                      token_file=str(tf)))
        tmp = self.tmp / "token.new"
        tmp.write_text(token2 + "\n")
        os.replace(tmp, tf)
        self.send(relay2, "renewed")
        esp2.wait_messages(1)
        self.assertTrue([e for e in esp2.auth_log() if e["ok"]], esp2.auth_log())

    # ------------------------------------------------------------ CRAM-MD5
    def test_cram_md5(self):
        esp = self.start_esp(extra_args=["--cram-md5"])
        relay = self.start_relay(upstream_for(esp, auth="cram-md5"))
        self.send(relay, "cram-md5")
        esp.wait_messages(1)
        auths = esp.auth_log()
        self.assertTrue(auths)
        self.assertTrue(all(e["mech"] == "CRAM-MD5" and e["ok"] for e in auths), auths)

    def test_auto_prefers_plain_over_cram_md5(self):
        esp = self.start_esp(extra_args=["--cram-md5"])
        relay = self.start_relay(upstream_for(esp))
        self.send(relay, "auto plain")
        esp.wait_messages(1)
        self.assertTrue(all(e["mech"] == "PLAIN" for e in esp.auth_log()),
                        esp.auth_log())

    def test_auto_picks_cram_md5_when_alone(self):
        esp = self.start_esp(extra_args=["--mechs", "CRAM-MD5 XOAUTH2"])
        relay = self.start_relay(upstream_for(esp))
        self.send(relay, "auto cram")
        esp.wait_messages(1)
        auths = esp.auth_log()
        self.assertTrue(auths and all(e["mech"] == "CRAM-MD5" and e["ok"]
                                      for e in auths), auths)

    def test_cram_md5_wrong_password_is_451(self):
        esp = self.start_esp(extra_args=["--cram-md5"])
        relay = self.start_relay(upstream_for(esp, auth="cram-md5",
                                              password="not-it"))
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<s@example.test>"), 451, "4.4.1")
        c.cmd("QUIT")
        self.assertTrue(esp.auth_log())
        self.assertFalse([e for e in esp.auth_log() if e["ok"]])

    # ------------------------------------------------ refresh and retry
    def test_stale_token_refreshed_within_transaction(self):
        """The first token is refused (expired at the server): relay25 runs
        token_command again and retries AUTH on the same connection; the
        client's own transaction gets its 250."""
        esp = self.start_esp(
            faults=["close-after-banner@1"],
            extra_args=["--oauth-token", "tok-1", "--oauth-token", "tok-2",
                        "--reject-first-token"])
        cmd, counter = self.counting_script("token", 'echo "tok-$n 3600"')
        self.add_secret("tok-1", USER)
        self.add_secret("tok-2", USER)
        relay = self.start_relay(self.token_upstream(esp, "xoauth2",
                                                     token_command=cmd))
        self.without_probe(esp)
        self.send(relay, "stale token")
        msgs = esp.wait_messages(1)
        self.assertEqual(self.runs(counter), 2)
        auths = esp.auth_log()
        self.assertEqual(len(auths), 2, auths)
        first, second = auths
        self.assertFalse(first["ok"])
        self.assertTrue(first.get("stale") and first["token_ok"], first)
        self.assertNotIn("bad_ack", first)
        self.assertTrue(second["ok"], second)
        # one connection: the retry happened inside the client's transaction
        self.assertEqual(first["conn"], second["conn"])
        self.assertEqual(msgs[0].meta["conn"], second["conn"])
        time.sleep(0.3)
        self.assertEqual(len(esp.messages()), 1)
        self.assertIn("retrying", relay.log_text())

    def test_oauthbearer_error_challenge_acknowledged(self):
        """OAUTHBEARER: the client answers the error challenge with AQ==
        (RFC 7628 3.2.3), then retries with a fresh token."""
        esp = self.start_esp(
            faults=["close-after-banner@1"],
            extra_args=["--oauth-token", "ob-2", "--reject-first-token"])
        cmd, counter = self.counting_script("token", 'echo "ob-$n"')
        self.add_secret("ob-1", USER)
        self.add_secret("ob-2", USER)
        relay = self.start_relay(self.token_upstream(esp, "oauthbearer",
                                                     token_command=cmd))
        self.without_probe(esp)
        self.send(relay, "oauthbearer retry")
        esp.wait_messages(1)
        auths = esp.auth_log()
        self.assertEqual([e["ok"] for e in auths], [False, True], auths)
        self.assertFalse([e for e in auths if e.get("bad_ack")], auths)
        self.assertEqual(self.runs(counter), 2)

    def test_same_token_again_is_not_retried(self):
        """A command that prints the refused token again: no second AUTH
        with it; the client gets 451 (and the mail is not lost: 4xx)."""
        esp = self.start_esp(faults=["close-after-banner@1"],
                             extra_args=["--oauth-token", "good"])
        cmd, counter = self.counting_script("token", 'echo "always-bad"')
        self.add_secret("always-bad", USER)
        relay = self.start_relay(self.token_upstream(esp, "xoauth2",
                                                     token_command=cmd))
        self.without_probe(esp)
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<s@example.test>"), 451, "4.4.1")
        c.cmd("QUIT")
        self.assertEqual(self.runs(counter), 2)
        self.assertEqual(len(esp.auth_log()), 1, esp.auth_log())
        self.assertIn("gave the same token again", relay.log_text())

    def test_password_command_rerun_after_535(self):
        """password_command prints a wrong password first, the right one
        when run again: relay25 re-runs it after the 535 and retries on the
        same connection, in the client's transaction."""
        esp = self.start_esp(faults=["close-after-banner@1"])
        cmd, counter = self.counting_script(
            "password", 'if [ $n -eq 1 ]; then echo wrong-password-1; '
            'else echo "%s"; fi' % PASSWORD)
        self.add_secret("wrong-password-1", USER)
        relay = self.start_relay(upstream_for(esp, password=None,
                                              password_command=cmd))
        self.without_probe(esp)
        self.send(relay, "rotated password")
        msgs = esp.wait_messages(1)
        self.assertEqual(self.runs(counter), 2)
        auths = esp.auth_log()
        self.assertEqual([e["ok"] for e in auths], [False, True], auths)
        self.assertEqual(auths[0]["conn"], auths[1]["conn"])
        self.assertEqual(msgs[0].meta["conn"], auths[1]["conn"])
        # cached from now on
        self.send(relay, "second")
        esp.wait_messages(2)
        self.assertEqual(self.runs(counter), 2)

    # ------------------------------------------------ off the event loop
    def test_slow_token_command_does_not_delay_other_clients(self):
        esp = self.start_esp(faults=["close-after-banner@1"],
                             extra_args=["--oauth-token", "slow-tok"])
        cmd, counter = self.counting_script("token", 'sleep 3\necho "slow-tok 3600"')
        self.add_secret("slow-tok", USER)
        relay = self.start_relay(self.token_upstream(esp, "xoauth2",
                                                     token_command=cmd))
        self.without_probe(esp)
        result = {}

        def client_a():
            t0 = time.monotonic()
            try:
                self.send(relay, "waits for the token")
                result["ok"] = True
            except Exception as e:      # reported below
                result["error"] = repr(e)
            result["secs"] = time.monotonic() - t0

        t = threading.Thread(target=client_a)
        t.start()
        wait_for(lambda: self.runs(counter) >= 1, 5 * SLOW,
                 "the token command to start")
        # while the command sleeps, another client is served at once
        worst = 0.0
        for _ in range(3):
            t0 = time.monotonic()
            c = self.raw(relay)
            self.greet(c)
            self.assertEqual(c.cmd("NOOP").code, 250)
            self.assertEqual(c.cmd("QUIT").code, 221)
            worst = max(worst, time.monotonic() - t0)
        self.note("greeting+EHLO+NOOP+QUIT while token_command sleeps: "
                  "worst %.3fs" % worst)
        self.assertLess(worst, 1.0 * SLOW)
        t.join(30 * SLOW)
        self.assertFalse(t.is_alive())
        self.assertTrue(result.get("ok"), result)
        self.assertGreater(result["secs"], 2.0)     # it did wait for the token
        esp.wait_messages(1)
        self.assertEqual(self.runs(counter), 1)

    # ------------------------------------------------ failures and secrecy
    def test_failing_token_command_is_451_and_not_logged(self):
        esp = self.start_esp(extra_args=["--oauth-token", "x"])
        cmd, _ = self.counting_script(
            "token", 'echo "leaked-output-%d"\nexit 7' % os.getpid())
        relay = self.start_relay(self.token_upstream(esp, "xoauth2",
                                                     token_command=cmd))
        c = self.raw(relay)
        self.greet(c)
        self.assert_code(c.cmd("MAIL FROM:<s@example.test>"), 451, "4.4.1")
        c.cmd("QUIT")
        log = relay.log_text()
        self.assertIn("token_command failed: exited with status 7", log)
        self.assertNotIn("leaked-output", log)
        self.assertEqual(esp.auth_log(), [])

    def test_no_token_in_debug_log(self):
        token = "secret-token-%d-xyz" % os.getpid()
        esp = self.start_esp(extra_args=["--oauth-token", token])
        cmd, _ = self.counting_script("token", 'echo "%s 60"' % token)
        relay = self.start_relay(self.token_upstream(esp, "xoauth2",
                                                     token_command=cmd))
        self.send(relay, "secrecy")
        esp.wait_messages(1)
        log = relay.log_text()
        self.assertIn("log_level = debug", relay.config_text)
        self.assertIn(">>> AUTH XOAUTH2 ********", log)
        self.assertNotIn(token, log)
        self.add_secret(token, USER)     # and the harness checks encodings
