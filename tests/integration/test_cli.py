"""test_cli.py - configuration and command line (SPEC 3, 4): -t with secrets
redacted, file:line errors, the world-readable-password warning, running from
the environment alone, SIGTERM letting a session finish, SIGHUP reload,
--check and --ping."""

import os
import re
import signal
import socket
import time

from lib import (PASSWORD, RELAY_NAME, RelayTestCase, certs, dot_stuff,
                 free_port, make_message, upstream_for, wait_for)


class CLI(RelayTestCase):

    def configured(self, upstream=None, **kw):
        """A configured but not started relay25 (the ESP is started)."""
        if upstream is None:
            esp = self.start_esp()
            upstream = upstream_for(esp)
        return self.start_relay(upstream, start=False, **kw)

    def test_version(self):
        r = self.configured().run("-V")
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout, r"^relay25 \d+\.\d+")

    def test_test_config_redacts_secrets(self):
        relay = self.configured()
        r = relay.run("-t")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout + r.stderr
        self.assertIn("********", out)
        self.assertNotIn(PASSWORD, out)
        self.assertIn("[upstream]", out)

    def test_config_errors_name_file_and_line(self):
        relay = self.configured()
        text = relay.config.read_text().replace(
            "[server]\n", "[server]\nno_such_key = 1\n", 1)
        text += "max_recipients = many\n"  # lands in [upstream]: unknown there
        relay.config.write_text(text)
        r = relay.run("-t")
        self.assertEqual(r.returncode, 1, r)
        self.assertRegex(r.stderr, re.escape(str(relay.config)) + r":2: ")
        # a started relay25 refuses the same file
        r2 = relay.run()
        self.assertNotEqual(r2.returncode, 0)

    def test_repeated_key_and_bad_value(self):
        relay = self.configured()
        base = relay.config.read_text()
        for extra, line_re in (("hostname = again\n", r":3: "),
                               ("max_message_size = lots\n", r":3: ")):
            relay.config.write_text(base.replace("[server]\n", "[server]\n" + extra, 1)
                                    .replace("hostname = %s\n" % RELAY_NAME,
                                             "hostname = %s\n" % RELAY_NAME, 1))
            r = relay.run("-t")
            self.assertEqual(r.returncode, 1, (extra, r.stdout, r.stderr))
            self.assertRegex(r.stderr, re.escape(str(relay.config)) + r":\d+: ", r.stderr)

    def test_world_readable_password_warns(self):
        relay = self.configured()
        os.chmod(relay.config, 0o644)
        r = relay.run("-t")
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stderr, r"(?i)warn")
        self.assertNotIn(PASSWORD, r.stdout + r.stderr)
        os.chmod(relay.config, 0o600)
        r = relay.run("-t")
        self.assertNotRegex(r.stderr, r"(?i)warning")

    def test_environment_only(self):
        esp = self.start_esp()
        u = upstream_for(esp)
        port = free_port()
        env = {"RELAY25_SERVER_LISTEN": "127.0.0.1:%d" % port,
               "RELAY25_SERVER_HOSTNAME": "env.test",
               "RELAY25_SERVER_LOG_LEVEL": "debug",
               "RELAY25_SERVER_SHUTDOWN_TIMEOUT": "5s",
               "RELAY25_UPSTREAM_HOST": u["host"],
               "RELAY25_UPSTREAM_PORT": str(u["port"]),
               "RELAY25_UPSTREAM_TLS": u["tls"],
               "RELAY25_UPSTREAM_CA_FILE": u["ca_file"],
               "RELAY25_UPSTREAM_USERNAME": u["username"],
               "RELAY25_UPSTREAM_PASSWORD": u["password"]}
        relay = self.start_relay(u, start=False, env=env, use_file=False)
        relay.port = port
        relay.start()
        c = self.raw(relay)
        self.assertEqual(c.reply().lines, ["220 env.test ESMTP relay25"])
        c.close()
        s = self.smtp(relay)
        s.sendmail("s@example.test", ["r@example.test"], make_message("from env"))
        s.quit()
        self.assertEqual(len(esp.wait_messages(1)), 1)

    def test_environment_overrides_file(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp, password="wrong-in-file"), start=False,
                                 env={"RELAY25_UPSTREAM_PASSWORD": esp.password})
        relay.start()
        s = self.smtp(relay)
        s.sendmail("s@example.test", ["r@example.test"], make_message("env override"))
        s.quit()
        self.assertEqual(len(esp.wait_messages(1)), 1)

    def test_sigterm_lets_session_in_flight_finish(self):
        esp, relay = self.esp_and_relay()
        c = self.raw(relay)
        self.greet(c)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        body = dot_stuff(make_message("in flight at SIGTERM", size=32 * 1024))
        c.send(body[:10000])
        relay.terminate()
        time.sleep(0.5)
        # no new session is greeted
        try:
            with socket.create_connection(("127.0.0.1", relay.port), timeout=2) as s:
                s.settimeout(2)
                try:
                    data = s.recv(100)
                except OSError:
                    data = b""
                self.assertFalse(data.startswith(b"220"), "greeted after SIGTERM: %r" % data)
        except OSError:
            pass        # refused: fine
        c.send(body[10000:])
        r = c.reply()
        self.assertEqual(r.code, 250, r)
        c.send(b"QUIT\r\n")
        code = relay.wait_exit(10)
        self.assertEqual(code, 0, "exit code after the last session ended")
        m = esp.wait_messages(1)[0]
        self.assertEqual(m.meta["size"], len(make_message("in flight at SIGTERM", size=32 * 1024)))

    def test_sighup_reload_and_invalid_reload_kept(self):
        esp, relay = self.esp_and_relay()
        good = relay.config.read_text()
        relay.config.write_text(good.replace("hostname = %s" % RELAY_NAME,
                                             "hostname = reloaded.test"))
        os.kill(relay.proc.pid, signal.SIGHUP)

        def greeting():
            c = self.raw(relay)
            line = c.reply().lines[0]
            c.send(b"QUIT\r\n")
            return line
        wait_for(lambda: greeting() == "220 reloaded.test ESMTP relay25", 10,
                 "the reloaded hostname in the greeting", 0.2)
        relay.config.write_text(good.replace("[server]\n", "[server]\nno_such_key = 1\n"))
        os.kill(relay.proc.pid, signal.SIGHUP)
        time.sleep(1.0)
        self.assertTrue(relay.proc.alive(), "relay25 died on an invalid reload")
        self.assertEqual(greeting(), "220 reloaded.test ESMTP relay25")
        s = self.smtp(relay)
        s.sendmail("s@example.test", ["r@example.test"], make_message("after reloads"))
        s.quit()
        self.assertEqual(len(esp.wait_messages(1)), 1)

    def test_check_good_and_bad_upstream(self):
        relay = self.configured()
        r = relay.run("--check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn(PASSWORD, r.stdout + r.stderr)
        bad = self.configured(upstream={
            "host": "localhost", "port": self.refusing_port(), "tls": "starttls",
            "ca_file": str(certs() / "ca.pem"), "username": "u", "password": PASSWORD,
            "connect_timeout": "3s"})
        r = bad.run("--check")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)

    def test_ping(self):
        esp, relay = self.esp_and_relay()
        r = relay.run("--ping")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        relay.stop()
        r = relay.run("--ping", timeout=30)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
