"""lib.py - the integration-test harness: the test ESP and relay25 as real
processes on loopback ports, an SMTP client that sees every byte, and a
unittest base class that cleans up (kills by PID) whatever a test started.

Environment:
  RELAY25_BIN   relay25 binary (default: build/relay25, or build-san/relay25
                with SANITIZE=1, relative to the repository)
  SANITIZE=1    relay25 is an ASan/UBSan build: sanitizer reports are written
                to the test's directory and any report fails the test
  VALGRIND=1    run relay25 under valgrind; definite leaks or errors (exit
                99) fail the test
  KEEP_TMP=1    keep every test's directory (default: only failed ones)

Only 127.0.0.1 is used; the one name relay25 is asked to resolve is
"localhost". Every wait is a bounded poll.
"""

import atexit
import base64
import glob
import hashlib
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ESP_PY = ROOT / "tests" / "esp" / "esp.py"
AIOSMTPD_ESP_PY = ROOT / "tests" / "integration" / "aiosmtpd_esp.py"
MKCERTS = ROOT / "tests" / "esp" / "mkcerts.sh"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

SANITIZE = os.environ.get("SANITIZE") == "1"
VALGRIND = os.environ.get("VALGRIND") == "1"
KEEP_TMP = os.environ.get("KEEP_TMP") == "1"
# everything that waits for relay25 waits longer under valgrind
SLOW = 10.0 if VALGRIND else (2.0 if SANITIZE else 1.0)

USER = "relayuser@example.test"
PASSWORD = "s3cret-P4ss"
CLIENT_NAME = "client.test"
RELAY_NAME = "relay.test"


def relay25_bin():
    b = os.environ.get("RELAY25_BIN")
    if b:
        return os.path.abspath(b)
    return str(ROOT / ("build-san" if SANITIZE else "build") / "relay25")


def check_bin(path):
    """A missing relay25 skips the test when none was asked for (RELAY25_BIN
    unset: nothing built yet) and fails it when RELAY25_BIN names it."""
    if os.access(path, os.X_OK):
        return
    if os.environ.get("RELAY25_BIN"):
        raise AssertionError("RELAY25_BIN=%s is not an executable" % path)
    raise unittest.SkipTest("relay25 not built: %s" % path)


def wait_for(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns a true value (returned) or timeout
    seconds pass (AssertionError naming what)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port():
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refusing_port():
    """(socket, port): bound but not listening, so connecting is refused and
    nobody else takes the port while the socket is open."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


_certs_lock = threading.Lock()
_certs_dir = None


def certs():
    """Directory of the test certificates (made once per process)."""
    global _certs_dir
    with _certs_lock:
        if _certs_dir is None:
            d = tempfile.mkdtemp(prefix="relay25-certs-")
            if not KEEP_TMP:
                atexit.register(shutil.rmtree, d, True)
            subprocess.run(["sh", str(MKCERTS), d], check=True, timeout=60)
            _certs_dir = Path(d)
        return _certs_dir


def crlf(data):
    """Normalise line ends to CRLF (what SMTP makes of any message)."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def make_message(subject="test", body_lines=None, extra_headers=(), size=None,
                 sender="sender@example.test", to="rcpt@example.test"):
    """An RFC 5322 message as CRLF bytes. With size, the body is filled with
    numbered 76-char lines (and a few dot-led ones) up to about size bytes."""
    head = ["From: <%s>" % sender, "To: <%s>" % to, "Subject: %s" % subject,
            "Message-ID: <%s@example.test>" % hashlib.sha1(subject.encode()).hexdigest()[:16],
            "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    head += list(extra_headers)
    out = "\r\n".join(head).encode() + b"\r\n\r\n"
    if body_lines is not None:
        out += b"".join((l.encode() if isinstance(l, str) else l) + b"\r\n"
                        for l in body_lines)
    if size:
        parts = [out]
        n = len(out)
        i = 0
        while n < size:
            if i % 1000 == 7:
                line = b"." + b"dot-led line %09d" % i
            else:
                line = (b"%09d " % i) + (b"abcdefghijklmnopqrstuvwxyz0123456789" * 2)[:66]
            parts.append(line + b"\r\n")
            n += len(line) + 2
            i += 1
        out = b"".join(parts)
    return out


# ---------------------------------------------------------------- processes

class Proc:
    """A child process whose stdout+stderr go to a file; stopped by PID."""

    def __init__(self, argv, log_path, env=None, cwd=None):
        self.argv = [str(a) for a in argv]
        self.log_path = str(log_path)
        self.logf = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                  stdout=self.logf, stderr=subprocess.STDOUT,
                                  env=env, cwd=cwd)
        self.pid = self.p.pid
        self.killed = False

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """Signal, wait up to timeout, then SIGKILL. Returns the exit code
        (negative: killed by that signal); sets .killed if SIGKILL was needed."""
        if self.p.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(10)
        self.logf.close()
        return self.p.returncode

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class StoredMessage:
    def __init__(self, meta, data, path):
        self.meta = meta
        self.data = data
        self.path = path

    def __repr__(self):
        return "<StoredMessage %s from=%s to=%s size=%s>" % (
            self.path, self.meta.get("mail_from"), self.meta.get("rcpt_tos"),
            self.meta.get("size"))


class ESP:
    """The test ESP (tests/esp/esp.py) as a process.

    kinds: listeners to open, of "starttls", "implicit", "plain".
    cert: "server" (valid), "wrong", "selfsigned", "expired"."""

    def __init__(self, workdir, name="esp", kinds=("starttls",), cert="server",
                 user=USER, password=PASSWORD, faults=(), reject_rcpt=(),
                 max_size=None, smtputf8=False, dsn=False, extra_args=()):
        self.dir = Path(workdir) / name
        self.msgdir = self.dir / "messages"
        self.msgdir.mkdir(parents=True)
        self.name = name
        self.kinds = kinds
        self.user = user
        self.password = password
        c = certs()
        argv = [PYTHON, ESP_PY, "--dir", self.msgdir, "--host", "127.0.0.1",
                "--cert", c / ("%s.pem" % cert), "--key", c / ("%s.key" % cert),
                "--ready-file", self.dir / "ready.json", "--verbose",
                "--timeout", "60", "--stall-time", "120"]
        for k in kinds:
            argv += ["--%s-port" % k, "0"]
        if user is not None:
            argv += ["--user", user, "--password", password]
        for f in faults:
            argv += ["--fault", f]
        for r in reject_rcpt:
            argv += ["--reject-rcpt", r]
        if max_size:
            argv += ["--max-size", str(max_size)]
        if smtputf8:
            argv.append("--smtputf8")
        if dsn:
            argv.append("--dsn")
        argv += list(extra_args)
        self.argv = argv
        self.proc = None
        self.ports = {}

    def start(self):
        self.proc = Proc(self.argv, self.dir / "esp.log")
        ready = self.dir / "ready.json"

        def is_ready():
            if ready.exists():
                return True
            if not self.proc.alive():
                raise AssertionError("ESP %s exited early:\n%s" % (
                    self.name, self.proc.log_text()))
            return False
        wait_for(is_ready, 20, "ESP %s ready-file" % self.name)
        info = json.loads(ready.read_text())
        self.ports = {k: info[k] for k in ("starttls", "implicit", "plain") if info.get(k)}
        return self

    def port(self, kind="starttls"):
        return self.ports[kind]

    def set_faults(self, specs):
        """Replace the faults for connections accepted from now on."""
        tmp = self.msgdir / ".faults.tmp"
        tmp.write_text("".join(s + "\n" for s in specs))
        os.replace(tmp, self.msgdir / "faults")

    def messages(self):
        out = []
        for j in sorted(self.msgdir.glob("[0-9]*.json")):
            meta = json.loads(j.read_text())
            eml = j.with_suffix(".eml")
            out.append(StoredMessage(meta, eml.read_bytes(), str(eml)))
        return out

    def wait_messages(self, n, timeout=10.0):
        wait_for(lambda: len(self.messages()) >= n, timeout * SLOW,
                 "%d message(s) at ESP %s" % (n, self.name))
        return self.messages()

    def _jsonl(self, name):
        p = self.msgdir / name
        if not p.exists():
            return []
        return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]

    def auth_log(self):
        return self._jsonl("auth.log")

    def conn_log(self):
        return self._jsonl("conn.log")

    def log_text(self):
        return self.proc.log_text() if self.proc else ""

    def stop(self):
        """Stop; AssertionError if the ESP itself had an internal error."""
        if not self.proc:
            return
        self.proc.stop(5)
        text = self.proc.log_text()
        if "INTERNAL ERROR" in text or "Traceback" in text:
            raise AssertionError("test ESP %s had an internal error:\n%s" % (
                self.name, text[-4000:]))


class AiosmtpdESP(ESP):
    """aiosmtpd_esp.py (aiosmtpd with STARTTLS and implicit TLS listeners)
    in place of the test ESP: same files, same interface, no faults."""

    def __init__(self, workdir, name="aiosmtpd", user=USER, password=PASSWORD):
        self.dir = Path(workdir) / name
        self.msgdir = self.dir / "messages"
        self.msgdir.mkdir(parents=True)
        self.name = name
        self.kinds = ("starttls", "implicit")
        self.user = user
        self.password = password
        c = certs()
        self.argv = [PYTHON, AIOSMTPD_ESP_PY, "--dir", self.msgdir,
                     "--cert", c / "server.pem", "--key", c / "server.key",
                     "--user", user, "--password", password,
                     "--ready-file", self.dir / "ready.json"]
        self.proc = None
        self.ports = {}


def upstream_for(esp, kind="starttls", name=None, **kw):
    """An [upstream] section (dict) pointing relay25 at an ESP listener."""
    u = {"name": name, "host": "localhost", "port": esp.port(kind),
         "tls": {"starttls": "starttls", "implicit": "implicit", "plain": "none"}[kind],
         "ca_file": str(certs() / "ca.pem"), "connect_timeout": "5s"}
    if esp.user is not None:
        u["username"] = esp.user
        u["password"] = esp.password
    u.update(kw)
    return u


class Relay:
    """relay25 as a process with a generated INI configuration."""

    def __init__(self, workdir, upstreams, hostname=RELAY_NAME, server=None,
                 name="relay25", extra_ini="", env=None, use_file=True):
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.hostname = hostname
        srv = {"listen": "127.0.0.1:%d" % self.port, "hostname": hostname,
               "log_level": "debug", "shutdown_timeout": "5s"}
        srv.update(server or {})
        lines = ["[server]"] + ["%s = %s" % (k, v) for k, v in srv.items() if v is not None]
        for u in upstreams:
            u = dict(u)
            nm = u.pop("name", None)
            lines += ["", "[upstream:%s]" % nm if nm else "[upstream]"]
            lines += ["%s = %s" % (k, v) for k, v in u.items() if v is not None]
        self.config_text = "\n".join(lines) + "\n" + extra_ini
        self.config = self.dir / "relay25.ini"
        fd = os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.config_text)
        self.shutdown_timeout = 5.0
        self.proc = None
        self.bin = relay25_bin()
        self.extra_env = dict(env or {})
        self.use_file = use_file     # False: configured by RELAY25_* alone
        self.exit_expected = False
        self.stopped = False

    def argv(self, *args):
        a = [self.bin] + (["-c", str(self.config)] if self.use_file else []) + list(args)
        if VALGRIND:
            a = ["valgrind", "--error-exitcode=99", "--leak-check=full",
                 "--errors-for-leak-kinds=definite",
                 "--log-file=%s" % (self.dir / "valgrind.%p.log")] + a
        return a

    def env(self):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("RELAY25_"):
                del env[k]
        if SANITIZE:
            env["ASAN_OPTIONS"] = "log_path=%s:detect_leaks=1:abort_on_error=0" % (
                self.dir / "asan")
            env["UBSAN_OPTIONS"] = "print_stacktrace=1:log_path=%s" % (self.dir / "ubsan")
        env.update(self.extra_env)
        return env

    def run(self, *args, timeout=30):
        """Run relay25 once with this configuration plus args (-t, --check,
        --ping ...); returns CompletedProcess (text). Sanitizer reports of
        the run land in the same place and fail the test at stop()."""
        check_bin(self.bin)
        argv = self.argv(*args)
        if VALGRIND:
            argv = argv[:1] + ["--log-file=%s" % (self.dir / "valgrind-run.%p.log")] + argv[1:]
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True,
                              timeout=timeout * SLOW, stdin=subprocess.DEVNULL)

    def terminate(self):
        """Send SIGTERM (the test then watches the shutdown itself)."""
        self.exit_expected = True
        os.kill(self.proc.pid, signal.SIGTERM)

    def wait_exit(self, timeout):
        """Wait for the exit; returns the exit code or None if still running."""
        try:
            return self.proc.p.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            return None

    def start(self, wait=True):
        check_bin(self.bin)
        self.proc = Proc(self.argv(), self.dir / "relay25.log", env=self.env())
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        def greeted():
            if not self.proc.alive():
                raise AssertionError("relay25 exited early (code %s):\n%s" % (
                    self.proc.p.returncode, self.log_text()[-4000:]))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5 * SLOW)
                    banner = s.recv(512)
                    s.sendall(b"QUIT\r\n")
                    try:
                        s.recv(512)
                    except OSError:
                        pass
                    return banner.startswith(b"220")
            except OSError:
                return False
        wait_for(greeted, timeout * SLOW, "relay25 greeting on port %d" % self.port, 0.1)

    def log_text(self):
        return self.proc.log_text() if self.proc else ""

    def vmhwm_kib(self):
        """Peak resident set size (VmHWM) of the running relay25, in KiB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM for pid %d" % self.proc.pid)

    def stop(self):
        """SIGTERM, bounded wait, SIGKILL. AssertionError if relay25 crashed,
        needed SIGKILL, exited non-zero, or left sanitizer/valgrind reports."""
        if self.stopped:
            return
        self.stopped = True
        if not self.proc:           # only one-shot runs (-t, --check, ...)
            problems = self.sanitizer_reports()
            if problems:
                raise AssertionError("\n".join(problems))
            return
        problems = []
        was_alive = self.proc.alive()
        code = self.proc.stop((self.shutdown_timeout + 10) * SLOW)
        if not was_alive and not self.exit_expected:
            problems.append("relay25 had already exited (code %s) before the "
                            "end of the test" % code)
        elif self.proc.killed:
            problems.append("relay25 did not exit within %.0fs of SIGTERM "
                            "(SIGKILLed)" % ((self.shutdown_timeout + 10) * SLOW))
        elif code == 99 and VALGRIND:
            problems.append("valgrind reported errors/definite leaks (exit 99)")
        elif code != 0:
            problems.append("relay25 exit code %s after SIGTERM" % code)
        problems += self.sanitizer_reports()
        if VALGRIND and code == 99:
            for f in sorted(glob.glob(str(self.dir / "valgrind.*.log"))):
                problems.append("%s:\n%s" % (f, Path(f).read_text(errors="replace")[-6000:]))
        if problems:
            raise AssertionError("\n".join(problems))

    def sanitizer_reports(self):
        out = []
        for pat in ("asan*", "ubsan*"):
            for f in sorted(glob.glob(str(self.dir / pat))):
                out.append("sanitizer report %s:\n%s" % (
                    f, Path(f).read_text(errors="replace")[-6000:]))
        return out


# ---------------------------------------------------------------- clients

class Reply:
    def __init__(self, lines):
        self.lines = lines              # list of str, without CRLF
        self.code = int(lines[-1][:3])
        self.text = "\n".join(l[4:] for l in lines)

    def __repr__(self):
        return "Reply(%r)" % self.lines


class RawClient:
    """An SMTP client over a raw socket: sends exactly the bytes given, and a
    background thread collects everything the server says, so replies can
    be checked in order and nothing is lost if the server closes early."""

    def __init__(self, port, host="127.0.0.1", timeout=30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout * SLOW
        self.buf = b""
        self.transcript = bytearray()    # every byte the server sent
        self.eof = False
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._reader, daemon=True)
        self.sock.settimeout(None)
        self.t.start()

    def _reader(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.eof = True
                    self.cond.notify_all()
                    return
                self.transcript += data
                self.buf += data
                self.cond.notify_all()

    def send(self, data):
        self.sock.sendall(data)

    def send_bytewise(self, data):
        for i in range(len(data)):
            self.sock.send(data[i:i + 1])

    def _take_reply(self):
        """Parse one complete reply from the buffer, or None."""
        lines = []
        pos = 0
        while True:
            nl = self.buf.find(b"\n", pos)
            if nl < 0:
                return None
            line = self.buf[pos:nl].rstrip(b"\r").decode("utf-8", "replace")
            pos = nl + 1
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                self.buf = self.buf[pos:]
                return Reply(lines)

    def reply(self, timeout=None):
        """The next reply; AssertionError on timeout or EOF."""
        deadline = time.monotonic() + (timeout or self.timeout)
        with self.cond:
            while True:
                r = self._take_reply()
                if r:
                    return r
                if self.eof:
                    raise AssertionError("connection closed; unparsed %r" % self.buf)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no reply within timeout; have %r" % self.buf)
                self.cond.wait(left)

    def reply_or_eof(self, timeout=None):
        """The next reply, or None if the server closed without one."""
        try:
            return self.reply(timeout)
        except AssertionError:
            if self.eof:
                return None
            raise

    def cmd(self, line):
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def wait_eof(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        with self.cond:
            while not self.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.t.join(5)


def dot_stuff(msg):
    """Dot-stuff CRLF message bytes and add the end-of-data marker."""
    msg = crlf(msg)
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    if msg.startswith(b"."):
        msg = b"." + msg
    return msg.replace(b"\r\n.", b"\r\n..") + b".\r\n"


# ---------------------------------------------------------------- test base

class RelayTestCase(unittest.TestCase):
    """Base class: a fresh directory per test, processes stopped by PID in
    cleanup (also when the test fails), logs shown by the runner on failure."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="relay25-it-%s-" % self._testMethodName))
        self.log_files = []     # (label, path) shown on failure
        self.notes = []         # lines the runner prints after the result
        self.relays = []
        self.esps = []

    def note(self, text):
        self.notes.append(text)

    def cleanup_tmp(self):
        if not KEEP_TMP:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # processes
    def start_esp(self, name=None, **kw):
        name = name or "esp%d" % (len(self.esps) + 1)
        esp = ESP(self.tmp, name=name, **kw)
        self.log_files.append(("ESP %s log" % name, esp.dir / "esp.log"))
        self.addCleanup(esp.stop)
        esp.start()
        self.esps.append(esp)
        return esp

    def start_relay(self, upstreams, start=True, **kw):
        """A Relay for these upstreams, started (unless start=False: then
        only configured, for one-shot runs like -t), stopped in cleanup."""
        if isinstance(upstreams, dict):
            upstreams = [upstreams]
        r = Relay(self.tmp, upstreams, name="relay25-%d" % (len(self.relays) + 1), **kw)
        self.log_files.append(("relay25 stderr", r.dir / "relay25.log"))
        self.log_files.append(("relay25 config", r.config))
        self.addCleanup(self.check_no_secrets, r, upstreams)   # after stop
        self.addCleanup(r.stop)
        self.relays.append(r)
        if start:
            r.start()
        return r

    def add_secret(self, secret, user=None):
        """A secret that relay25 obtains other than from the upstream dict
        (password_command output, an OAuth token): checked like passwords,
        with the XOAUTH2 encoding too when user is given."""
        if not hasattr(self, "extra_secrets"):
            self.extra_secrets = []
        self.extra_secrets.append(secret)
        self.extra_secrets.append(b64(secret))
        if user is not None:
            self.extra_secrets.append(b64("\0%s\0%s" % (user, secret)))
            self.extra_secrets.append(
                b64("user=%s\x01auth=Bearer %s\x01\x01" % (user, secret)))

    def check_no_secrets(self, relay, upstreams):
        """SPEC 2: secrets never appear in relay25's log."""
        text = relay.log_text()
        for u in upstreams:
            pw = u.get("password")
            if not pw:
                continue
            user = u.get("username") or ""
            for secret in (pw, b64("\0%s\0%s" % (user, pw)), b64(pw)):
                self.assertNotIn(secret, text, "a secret appears in relay25's log")
        for secret in getattr(self, "extra_secrets", ()):
            self.assertNotIn(secret, text, "a secret appears in relay25's log")

    def start_aiosmtpd(self):
        esp = AiosmtpdESP(self.tmp)
        self.log_files.append(("aiosmtpd log", esp.dir / "esp.log"))
        self.addCleanup(esp.stop)
        esp.start()
        self.esps.append(esp)
        return esp

    def esp_and_relay(self, kind="starttls", esp_kw=None, up_kw=None, relay_kw=None):
        kinds = ("starttls", "implicit") if kind in ("starttls", "implicit") else (kind,)
        esp = self.start_esp(kinds=kinds, **(esp_kw or {}))
        relay = self.start_relay(upstream_for(esp, kind, **(up_kw or {})),
                                 **(relay_kw or {}))
        return esp, relay

    def refusing_port(self):
        s, port = refusing_port()
        self.addCleanup(s.close)
        return port

    # clients
    def smtp(self, relay, timeout=30):
        s = smtplib.SMTP("127.0.0.1", relay.port, local_hostname=CLIENT_NAME,
                         timeout=timeout * SLOW)
        self.addCleanup(self._close_smtp, s)
        return s

    @staticmethod
    def _close_smtp(s):
        try:
            s.close()
        except Exception:
            pass

    def raw(self, relay, timeout=30):
        c = RawClient(relay.port, timeout=timeout)
        self.addCleanup(c.close)
        return c

    def greet(self, c):
        """Read the greeting and EHLO; returns the EHLO reply."""
        r = c.reply()
        self.assertEqual(r.code, 220, r)
        r = c.cmd("EHLO " + CLIENT_NAME)
        self.assertEqual(r.code, 250, r)
        return r

    # assertions
    def assert_code(self, reply, code, enhanced=None):
        """reply: Reply or (code, msg) from smtplib."""
        if isinstance(reply, tuple):
            got, text = reply[0], reply[1].decode("utf-8", "replace") \
                if isinstance(reply[1], bytes) else reply[1]
        else:
            got, text = reply.code, reply.text
        if isinstance(code, str):  # "4xx"
            ok = str(got)[0] == code[0]
        else:
            ok = got == code
        self.assertTrue(ok, "expected %s, got %s %s" % (code, got, text))
        if enhanced:
            self.assertTrue(text.startswith(enhanced),
                            "expected enhanced code %s, got %s %s" % (enhanced, got, text))

    def assert_nothing_delivered(self, esp, wait=2.0):
        """Wait a bounded time, then check the ESP stored no message."""
        time.sleep(wait)
        self.assertEqual(esp.messages(), [], "ESP stored a message")

    def assert_no_cleartext_auth(self, esp):
        for e in esp.auth_log():
            self.assertTrue(e.get("tls"), "credentials sent without TLS: %r" % e)
            self.assertFalse(e.get("leak"), "password seen in cleartext: %r" % e)


def b64(s):
    return base64.b64encode(s.encode()).decode()
