"""test_deploy.py - "Deploy anywhere" (issue 4): the /metrics and /healthz
endpoint, systemd socket activation (LISTEN_PID/LISTEN_FDS) and readiness
notification ($NOTIFY_SOCKET), JSON logs, container-style configuration
from RELAY25_* variables with a *_FILE secret, `--ping` as a health probe,
and the `--check` report."""

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import time

from lib import (PASSWORD, SLOW, Proc, RelayTestCase, certs, free_port,
                 make_message, upstream_for, wait_for)

METRICS_INI = "\n[metrics]\nlisten = 127.0.0.1:%d\n"


def http_get(port, path, timeout=5.0):
    """(status, content-type, body text) of one GET on 127.0.0.1:port."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read().decode()
    finally:
        c.close()


def metric(text, name):
    """The value of one sample line ('name' includes any {labels}), or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        k, _, v = line.rpartition(" ")
        if k == name:
            return float(v)
    return None


def unique_keys(pairs):
    """json.loads hook: a JSON log record must not repeat a key."""
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError("repeated key(s) %s" % dup)
    return dict(pairs)


class InheritedProc(Proc):
    """Proc whose child gets `fd` as descriptor 3 (what systemd does for
    socket activation): close_fds=False, dup2 in the child before exec."""

    def __init__(self, argv, log_path, fd, env=None):
        self.argv = [str(a) for a in argv]
        self.log_path = str(log_path)
        self.logf = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                  stdout=self.logf, stderr=subprocess.STDOUT,
                                  env=env, close_fds=False,
                                  preexec_fn=lambda: os.dup2(fd, 3))
        self.pid = self.p.pid
        self.killed = False


class Notifications:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET;
    records every message with the sender's pid (SCM_CREDENTIALS)."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.got = []           # (pid, {key: value}, raw text)

    def _recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return None
        pid = None
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:12])[0]
        text = data.decode()
        fields = dict(l.split("=", 1) for l in text.split("\n") if "=" in l)
        self.got.append((pid, fields, text))
        return self.got[-1]

    def wait(self, key, value="1", timeout=10.0):
        """Receive until a message with key=value arrives (bounded); returns
        (pid, fields, text). Messages on the way stay in self.got."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s=%s on NOTIFY_SOCKET within %.0fs; got %r"
                                     % (key, value, timeout * SLOW,
                                        [t for _, _, t in self.got]))
            m = self._recv(left)
            if m and m[1].get(key) == value:
                return m

    def drain(self, seconds):
        """Collect whatever arrives within seconds."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._recv(max(0.01, deadline - time.monotonic()))

    def close(self):
        self.sock.close()


class Deploy(RelayTestCase):

    def send_one(self, relay, subject, sender="app@example.test",
                 rcpts=("someone@example.test",)):
        s = self.smtp(relay)
        self.assertEqual(s.sendmail(sender, list(rcpts), make_message(subject)), {})
        s.quit()

    # ------------------------------------------------------------ metrics

    def test_metrics_and_healthz(self):
        esp = self.start_esp()
        mport = free_port()
        relay = self.start_relay(upstream_for(esp), extra_ini=METRICS_INI % mport)
        self.send_one(relay, "counted")
        esp.wait_messages(1)

        def sent_is(n):
            st, _, body = http_get(mport, "/metrics")
            return body if st == 200 and metric(
                body, 'relay25_messages_total{outcome="sent"}') == n else None
        body = wait_for(lambda: sent_is(1), 5 * SLOW, "messages_total{sent} == 1")
        st, ctype, body = http_get(mport, "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        self.assertIn("version=0.0.4", ctype)
        self.assertEqual(metric(body, 'relay25_messages_total{outcome="sent"}'), 1)
        for o in ("deferred", "rejected", "aborted"):
            self.assertEqual(metric(body, 'relay25_messages_total{outcome="%s"}' % o), 0, o)
        self.assertGreaterEqual(metric(body, "relay25_sessions_accepted_total"), 1)
        self.assertEqual(metric(body, 'relay25_message_bytes_total{outcome="sent"}'),
                         esp.messages()[0].meta["size"])
        self.assertGreaterEqual(metric(body, 'relay25_upstream_attempts_total{result="ok"}'), 1)
        self.assertEqual(metric(body, "relay25_upstream_last_attempt_ok"), 1)
        self.assertEqual(metric(body, "relay25_listening"), 1)
        self.assertGreaterEqual(metric(
            body, 'relay25_upstream_stage_duration_seconds_count{stage="auth"}'), 1)
        self.assertIn("# TYPE relay25_messages_total counter", body)
        self.assertIn("# TYPE relay25_sessions_active gauge", body)
        # every sample line is "relay25_NAME[{labels}] NUMBER"
        for line in body.splitlines():
            if not line.startswith("#"):
                self.assertRegex(line, r'^relay25_[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? '
                                       r'[0-9.e+-]+$')

        st, _, body = http_get(mport, "/healthz")
        self.assertEqual((st, body), (200, "ok\n"))
        st, _, _ = http_get(mport, "/no-such-path")
        self.assertEqual(st, 404)
        st, _, _ = http_get(mport, "/metrics?x=1")
        self.assertEqual(st, 200, "a query string is ignored")

        # garbage: 400, then the server closes the connection
        for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),
                     b"HELLO THERE\r\n\r\n",
                     b"GET /metrics HTTP/1.1\r\nbad header line\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", mport), timeout=5 * SLOW) as s:
                s.sendall(junk)
                data = b""
                deadline = time.monotonic() + 5 * SLOW
                while time.monotonic() < deadline:
                    try:
                        chunk = s.recv(4096)
                    except socket.timeout:
                        break
                    if not chunk:
                        break
                    data += chunk
                else:
                    self.fail("metrics endpoint kept the connection open")
                self.assertTrue(data.startswith(b"HTTP/1.1 400 "), (junk, data))
                self.assertIn(b"Connection: close", data)
                self.assertEqual(s.recv(1), b"", "connection closed after the 400")

        # relay25 keeps serving SMTP, and counts it
        self.send_one(relay, "after the junk")
        esp.wait_messages(2)
        wait_for(lambda: sent_is(2), 5 * SLOW, "messages_total{sent} == 2")
        self.assertTrue(relay.proc.alive())

    def test_healthz_503_when_upstream_refuses(self):
        mport = free_port()
        dead = self.refusing_port()
        relay = self.start_relay({"host": "localhost", "port": dead, "tls": "starttls",
                                  "ca_file": str(certs() / "ca.pem"), "username": "u",
                                  "password": PASSWORD, "connect_timeout": "3s"},
                                 extra_ini=METRICS_INI % mport)
        c = self.raw(relay)
        self.greet(c)
        r = c.cmd("MAIL FROM:<app@example.test>")
        self.assert_code(r, 451, "4.4.1")
        st, _, body = http_get(mport, "/healthz")
        self.assertEqual(st, 503, body)
        self.assertIn("unhealthy", body)
        st, _, body = http_get(mport, "/metrics")
        self.assertEqual(st, 200)
        self.assertEqual(metric(body, "relay25_upstream_last_attempt_ok"), 0)
        self.assertGreaterEqual(metric(body, 'relay25_upstream_failures_total{kind="connect"}'), 1)
        self.assertGreaterEqual(metric(body, 'relay25_upstream_attempts_total{result="failed"}'), 1)
        self.assertEqual(metric(body, 'relay25_messages_total{outcome="sent"}'), 0)
        # the client session is still usable, the relay still greets
        self.assertEqual(c.cmd("NOOP").code, 250)
        c2 = self.raw(relay)
        self.assertEqual(c2.reply().code, 220)

    def test_metrics_add_up_across_workers(self):
        esp = self.start_esp()
        mport = free_port()
        relay = self.start_relay(upstream_for(esp), server={"workers": "2"},
                                 extra_ini=METRICS_INI % mport)
        for i in range(6):
            self.send_one(relay, "worker %d" % i)
        esp.wait_messages(6)

        def sent():
            st, _, body = http_get(mport, "/metrics")
            return st == 200 and metric(body, 'relay25_messages_total{outcome="sent"}') == 6
        wait_for(sent, 5 * SLOW, "messages_total{sent} == 6 over both workers")
        st, _, body = http_get(mport, "/metrics")
        self.assertGreaterEqual(metric(body, "relay25_sessions_accepted_total"), 6)
        self.assertEqual(metric(body, "relay25_listening"), 1)
        self.assertEqual(http_get(mport, "/healthz")[0], 200)

    # ------------------------------------------------------------ systemd

    def test_socket_activation(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), start=False)
        config_port = relay.port            # `listen` in the ini: must stay unbound
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        relay.port = ls.getsockname()[1]
        inode = os.fstat(ls.fileno()).st_ino
        argv = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"'] + relay.argv()
        try:
            relay.proc = InheritedProc(argv, relay.dir / "relay25.log", ls.fileno(),
                                       env=relay.env())
        finally:
            ls.close()                      # relay25 holds the only copy now
        relay.wait_ready()
        self.send_one(relay, "socket activated")
        m = esp.wait_messages(1)
        self.assertEqual(m[0].meta["rcpt_tos"], ["someone@example.test"])
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", config_port), timeout=2).close()
        # relay25 serves the very socket it inherited, on descriptor 3
        self.assertEqual(os.readlink("/proc/%d/fd/3" % relay.proc.pid), "socket:[%d]" % inode)
        self.assertRegex(relay.log_text(), r"127\.0\.0\.1:%d" % relay.port)
        self.assertNotRegex(relay.log_text(), r"listening on 127\.0\.0\.1:%d" % config_port)

    def notify_relay(self, **kw):
        esp = self.start_esp()
        n = Notifications(self.tmp / "notify.sock")
        self.addCleanup(n.close)
        relay = self.start_relay(upstream_for(esp), start=False,
                                 env={"NOTIFY_SOCKET": n.path}, **kw)
        relay.start()
        return esp, relay, n

    def test_systemd_notify(self):
        esp, relay, n = self.notify_relay()
        pid, _, _ = n.wait("READY", timeout=10)
        self.assertEqual(pid, relay.proc.pid)
        os.kill(relay.proc.pid, signal.SIGHUP)
        pid, fields, _ = n.wait("RELOADING", timeout=10)
        self.assertEqual(pid, relay.proc.pid)
        self.assertRegex(fields.get("MONOTONIC_USEC", ""), r"^\d+$")
        n.wait("READY", timeout=10)
        self.send_one(relay, "after reload")
        esp.wait_messages(1)
        relay.terminate()
        pid, _, _ = n.wait("STOPPING", timeout=10)
        self.assertEqual(pid, relay.proc.pid)
        self.assertEqual(relay.wait_exit(10), 0)
        seq = [t.split("\n")[0] for _, _, t in n.got]
        self.assertEqual(seq, ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], seq)

    def test_systemd_notify_invalid_reload_ready_again(self):
        esp, relay, n = self.notify_relay()
        n.wait("READY")
        relay.config.write_text(relay.config.read_text().replace(
            "[server]\n", "[server]\nno_such_key = 1\n"))
        os.kill(relay.proc.pid, signal.SIGHUP)
        n.wait("RELOADING")
        n.wait("READY")         # still running the old configuration
        self.assertTrue(relay.proc.alive())
        self.send_one(relay, "old config")
        esp.wait_messages(1)

    def test_systemd_notify_workers_master_only(self):
        esp, relay, n = self.notify_relay(server={"workers": "2"})
        pid, _, _ = n.wait("READY", timeout=10)
        self.assertEqual(pid, relay.proc.pid, "READY=1 must come from the main PID")
        self.send_one(relay, "through a worker")
        esp.wait_messages(1)
        n.drain(1.5 * SLOW)
        readies = [p for p, f, _ in n.got if f.get("READY") == "1"]
        self.assertEqual(readies, [relay.proc.pid], n.got)
        relay.terminate()
        pid, _, _ = n.wait("STOPPING", timeout=10)
        self.assertEqual(pid, relay.proc.pid)
        self.assertEqual(relay.wait_exit(15), 0)
        n.drain(0.3)
        for p, _, t in n.got:
            self.assertEqual(p, relay.proc.pid, "a worker notified: %r" % t)

    # ------------------------------------------------------------ logs

    def test_json_logs(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), server={"log_format": "json"})
        # exercise escaping in the debug dialogue: quotes, backslash, tab, 8-bit
        c = self.raw(relay)
        self.greet(c)
        c.send(b'NOOP "quoted" back\\slash\ttab \xc3\xa9\r\n')
        self.assertEqual(c.reply().code, 250)
        c.cmd("QUIT")
        self.send_one(relay, "json", sender="json.sender@example.test",
                      rcpts=("r1@example.test", "r2@example.test"))
        qid = esp.wait_messages(1)[0].meta["queue_id"]
        self.assertTrue(qid)
        relay.stop()
        lines = relay.log_text().splitlines()
        self.assertGreater(len(lines), 3)
        recs = []
        for line in lines:
            try:
                rec = json.loads(line, object_pairs_hook=unique_keys)
            except ValueError as e:
                raise AssertionError("not JSON: %r (%s)" % (line, e)) from None
            self.assertIsInstance(rec, dict, line)
            self.assertIn("ts", rec, line)
            self.assertRegex(rec["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(rec.get("level"), ("error", "warn", "info", "debug"), line)
            recs.append(rec)
        sent = [r for r in recs if r.get("status") == "sent"]
        self.assertEqual(len(sent), 1, sent)
        m = sent[0]
        self.assertEqual(m["queue_id"], qid)
        self.assertIn("json.sender@example.test", m["from"])
        self.assertEqual(str(m["rcpts"]), "2")
        self.assertEqual(m["level"], "info")
        for k in ("session", "client", "size", "upstream", "reply", "duration"):
            self.assertIn(k, m)
        self.assertIn(qid, m["reply"])
        # the client's bytes, sanitised (\" \\ \xNN) by relay25, then JSON-escaped
        noop = [r.get("msg") for r in recs if "NOOP" in r.get("msg", "")]
        self.assertEqual(noop, [r'<<< NOOP \"quoted\" back\\slash\x09tab \xc3\xa9'])

    def assert_json_lines(self, text):
        recs = []
        for line in text.splitlines():
            try:
                rec = json.loads(line, object_pairs_hook=unique_keys)
            except ValueError as e:
                raise AssertionError("stderr line is not JSON: %r (%s)" % (line, e)) from None
            self.assertIsInstance(rec, dict, line)
            self.assertIn("ts", rec, line)
            self.assertIn("level", rec, line)
            recs.append(rec)
        return recs

    def test_json_logs_failed_reload(self):
        """With log_format = json, the file:line errors of a failed SIGHUP
        reload are JSON records too: a log shipper parsing each line loses
        nothing, and the error is at level error."""
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), server={"log_format": "json"})
        good = relay.config.read_text()
        relay.config.write_text(good.replace("[server]\n", "[server]\nno_such_key = 1\n"))
        os.kill(relay.proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload failed" in relay.log_text(), 5 * SLOW,
                 "the failed reload in the log")
        self.assertTrue(relay.proc.alive())
        self.send_one(relay, "old config still serves")
        esp.wait_messages(1)
        relay.stop()
        recs = self.assert_json_lines(relay.log_text())
        self.assertTrue(any("no_such_key" in json.dumps(r) and r["level"] == "error"
                            for r in recs), "the reload error itself is not in the log")

    def test_json_logs_startup_warning(self):
        """A start-up warning (the file holding the password is readable by
        others) is a JSON record at level warn when log_format = json."""
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), start=False,
                                 server={"log_format": "json"})
        os.chmod(relay.config, 0o644)
        r = relay.run("-t")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("readable by group or others", r.stderr)
        relay.start()
        relay.stop()
        recs = self.assert_json_lines(relay.log_text())
        self.assertTrue(any(r["level"] == "warn" and "readable by group or others"
                            in json.dumps(r) for r in recs), recs)

    # ------------------------------------------------------------ container

    def test_container_env_only_with_password_file(self):
        esp = self.start_esp()
        u = upstream_for(esp)
        secret = self.tmp / "secrets" / "esp_password"
        secret.parent.mkdir()
        secret.write_text(esp.password + "\n")
        os.chmod(secret, 0o440)
        port = free_port()
        env = {"RELAY25_SERVER_LISTEN": "127.0.0.1:%d" % port,
               "RELAY25_SERVER_HOSTNAME": "sidecar.test",
               "RELAY25_SERVER_SHUTDOWN_TIMEOUT": "5s",
               "RELAY25_UPSTREAM_HOST": u["host"],
               "RELAY25_UPSTREAM_PORT": str(u["port"]),
               "RELAY25_UPSTREAM_CA_FILE": u["ca_file"],
               "RELAY25_UPSTREAM_USERNAME": u["username"],
               "RELAY25_UPSTREAM_PASSWORD_FILE": str(secret)}
        relay = self.start_relay(u, start=False, env=env, use_file=False)
        relay.port = port
        t = relay.run("-t")
        self.assertEqual(t.returncode, 0, t.stderr)
        self.assertIn("(environment)", t.stderr)
        self.assertIn("password_file = %s" % secret, t.stdout)
        self.assertNotIn(esp.password, t.stdout + t.stderr)
        relay.start()
        c = self.raw(relay)
        self.assertEqual(c.reply().lines, ["220 sidecar.test ESMTP relay25"])
        c.close()
        self.send_one(relay, "from a sidecar")
        m = esp.wait_messages(1)
        self.assertEqual(m[0].meta["auth_user"], esp.user)
        self.assert_no_cleartext_auth(esp)
        p = relay.run("--ping")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        relay.stop()
        t0 = time.monotonic()
        p = relay.run("--ping", timeout=10)
        took = time.monotonic() - t0
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertLess(took, 6 * SLOW, "--ping took %.1fs against a stopped relay" % took)
        self.assertNotIn(esp.password, relay.log_text())

    # ------------------------------------------------------------ --check

    def test_check_report(self):
        esp = self.start_esp()
        good = self.start_relay(upstream_for(esp), start=False)
        r = good.run("--check")
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        for word in ("TLS", "AUTH", "PASS", "EHLO"):
            self.assertIn(word, out)
        self.assertRegex(out, r"(?m)^\s+TLS\s+ok: TLSv1\.[23]")
        self.assertRegex(out, r"(?m)^\s+AUTH\s+ok: ")
        self.assertRegex(out, r"(?m)^PASS: 0 of 1 upstream\(s\) failed$")
        self.assertNotIn(esp.password, out)

        wrong = "Wr0ng-" + esp.password[::-1]
        bad = self.start_relay(upstream_for(esp, password=wrong), start=False)
        r = bad.run("--check")
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 1, out)
        self.assertIn("535", out)
        self.assertRegex(out, r"(?m)^\s+AUTH\s+FAILED: .*535")
        self.assertRegex(out, r"(?m)^\s+hint\s+\S")
        self.assertRegex(out, r"(?m)^FAIL: 1 of 1 upstream\(s\) failed$")
        for secret in (wrong, esp.password):
            self.assertNotIn(secret, out)
