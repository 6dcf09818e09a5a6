#!/usr/bin/python3
"""bench.py - relay25's benchmark (issue 5): the same load through several
paths to the same upstream, side by side, every figure a median of
BENCH_RUNS runs; prints one table and writes it to tests/bench/RESULTS.md.

Upstream: build/bench/bench-upstream (C, libev + wolfSSL: STARTTLS and
implicit TLS, AUTH PLAIN/LOGIN, bodies discarded and counted). Its ceiling is
measured first. Load: build/bench/bench-loadgen (C, libev + wolfSSL).

Paths (same upstream, same load):
  direct     loadgen speaks STARTTLS + AUTH to the upstream itself, one
             session per message (a legacy application with TLS)
  relay25    relay25, pool_size = 0: plain SMTP in, STARTTLS + AUTH out
  pool       relay25, pool_size = 8 (warm upstream sessions)
  postfix    Postfix null client (relayhost, smtp_tls_security_level =
             encrypt, SASL), own config/queue directory, non-default port
  opensmtpd  OpenSMTPD: relay host smtp+tls://label@127.0.0.1:PORT auth <t>
  msmtpd     msmtpd --command 'msmtp -f %F --' with tls + auth
For the queueing peers (postfix, opensmtpd) throughput counts until the
upstream has received every message; their latency is the client's
(queued) acknowledgement.

Environment:
  BENCH_SCALE=0.1     scale the message/session counts (quick run)
  BENCH_RUNS=3        runs per figure (median)
  BENCH_PEERS=postfix,opensmtpd,msmtpd   peers to include ("" = none)
  BENCH_SCENARIOS=1k,4k,10m,idle,active  scenarios to run
  BENCH_CALLGRIND=1   instruction count per message under callgrind (0: off)
  BENCH_POOL=8        pool_size of the "pool" path
  BENCH_WORKERS=N     relay25's [server] workers (default: relay25's default)
  BENCH_OUT=FILE      where the table goes (default tests/bench/RESULTS.md)
  RELAY25_BIN         relay25 binary (default build/relay25)
  KEEP_TMP=1          keep the work directory

Only 127.0.0.1 is used. Every wait is bounded; every process started is
stopped by its PID (its process group) at the end, also on failure.
"""

import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_BIN = ROOT / "build" / "bench"
UPSTREAM_BIN = BENCH_BIN / "bench-upstream"
LOADGEN_BIN = BENCH_BIN / "bench-loadgen"
RELAY_BIN = Path(os.environ.get("RELAY25_BIN") or ROOT / "build" / "relay25")
MKCERTS = ROOT / "tests" / "esp" / "mkcerts.sh"
ESP_PY = ROOT / "tests" / "esp" / "esp.py"
SMTPD_ROOT = Path(os.environ.get("SMTPD_ROOT", "/var/lib/relay25-bench/opensmtpd"))
MSMTPD_ROOT = Path(os.environ.get("MSMTPD_ROOT", "/var/lib/relay25-bench/msmtp-mta"))

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
RUNS = max(1, int(os.environ.get("BENCH_RUNS", "3")))
PEERS = [p for p in os.environ.get("BENCH_PEERS", "postfix,opensmtpd,msmtpd").split(",") if p]
SCENARIOS = os.environ.get("BENCH_SCENARIOS", "1k,4k,10m,idle,active").split(",")
CALLGRIND = os.environ.get("BENCH_CALLGRIND", "1") == "1"
POOL = int(os.environ.get("BENCH_POOL", "8"))
WORKERS = os.environ.get("BENCH_WORKERS", "")     # relay25's [server] workers; "" = default
OUT = Path(os.environ.get("BENCH_OUT") or ROOT / "tests" / "bench" / "RESULTS.md")
KEEP = os.environ.get("KEEP_TMP") == "1"

USER = "bench@example.test"
PASSWORD = "bench-P4ss-w0rd"
MIB = 1024 * 1024


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def scaled(n, lo=1):
    return max(lo, int(round(n * SCALE)))


def wait_for(pred, timeout, what, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise RuntimeError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ processes

class Procs:
    """Every process the bench starts: each in its own process group, so
    stop() ends it and whatever it forked, by its PID."""

    def __init__(self):
        self.live = []

    def start(self, argv, logpath, env=None, cwd=None):
        f = open(logpath, "ab")
        p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                             stdout=f, stderr=subprocess.STDOUT, env=env,
                             cwd=cwd, start_new_session=True)
        f.close()
        p.logpath = logpath
        self.live.append(p)
        return p

    def stop(self, p, timeout=10, sig=signal.SIGTERM):
        if p not in self.live:
            return p.returncode
        self.live.remove(p)
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # the group may hold children still (postfix, msmtpd)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        return p.returncode

    def stop_all(self):
        for p in list(self.live):
            self.stop(p, timeout=5)


PROCS = Procs()


def tree_pids(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid):
    return sum(status_kib(p, "VmRSS") for p in tree_pids(pid))


def hwm_kib(pid):
    return sum(status_kib(p, "VmHWM") for p in tree_pids(pid))


def reset_hwm(pid):
    for p in tree_pids(pid):
        try:
            with open("/proc/%d/clear_refs" % p, "w") as f:
                f.write("5")
        except OSError:
            pass


def smtp_greets(port, timeout=2.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            banner = s.recv(512)
            s.sendall(b"QUIT\r\n")
            try:
                s.recv(512)
            except OSError:
                pass
            return banner.startswith(b"220")
    except OSError:
        return False


# ------------------------------------------------------------------ pieces

class Upstream:
    def __init__(self, work, certs):
        self.dir = work / "upstream"
        self.dir.mkdir()
        self.counter = self.dir / "counters"
        ready = self.dir / "ready.json"
        self.p = PROCS.start([UPSTREAM_BIN, "--cert", certs / "server.pem",
                              "--key", certs / "server.key", "--host", "127.0.0.1",
                              "--starttls-port", "0", "--implicit-port", "0",
                              "--user", USER, "--password", PASSWORD,
                              "--workers", os.environ.get("BENCH_UPSTREAM_WORKERS", "1"),
                              "--ready-file", ready, "--counter-file", self.counter],
                             self.dir / "upstream.log")
        wait_for(lambda: ready.exists() or self.p.poll() is not None, 10, "upstream ready")
        if self.p.poll() is not None:
            raise RuntimeError("bench-upstream exited: " + Path(self.p.logpath).read_text())
        info = json.loads(ready.read_text())
        self.starttls, self.implicit = info["starttls"], info["implicit"]

    def counts(self):
        with open(self.counter, "rb") as f:
            msgs, nbytes, conns, auth, errs = struct.unpack("<5Q", f.read(40))
        return {"msgs": msgs, "bytes": nbytes, "conns": conns, "auth": auth, "errors": errs}

    def msgs(self):
        return self.counts()["msgs"]


def loadgen_argv(port, mode="plain", auth=False, ca=None, **kw):
    argv = [LOADGEN_BIN, "--host", "127.0.0.1", "--port", port, "--mode", mode]
    if auth:
        argv += ["--user", USER, "--password", PASSWORD]
    if ca:
        argv += ["--ca", ca]
    for k, v in kw.items():
        argv += ["--" + k.replace("_", "-"), v]
    return [str(a) for a in argv]


def parse_result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError("loadgen printed no RESULT:\n" + text[-2000:])


def run_loadgen(argv, timeout):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("loadgen failed (%d): %s" % (r.returncode, r.stderr[-2000:]))
    return parse_result(r.stdout)


def run_loadgen_held(argv, timeout, at_hold):
    """Run a --hold loadgen: at_hold(n) is called when every session is
    held; then the sessions are released. Returns (RESULT, at_hold's value)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    PROCS.live.append(p)
    try:
        deadline = time.monotonic() + timeout
        buf = b""
        held = None
        while held is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("loadgen never held its sessions")
            r, _, _ = select.select([p.stdout], [], [], left)
            if not r:
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("loadgen ended before holding: %s" % p.stderr.read()[-2000:])
            buf += chunk
            m = re.search(rb"HELD (\d+)\n", buf)
            if m:
                held = int(m.group(1))
        value = at_hold(held)
        os.kill(p.pid, signal.SIGUSR1)
        out, err = p.communicate(timeout=max(5, deadline - time.monotonic()))
        PROCS.live.remove(p)
        return parse_result((buf + out).decode()), value
    finally:
        if p in PROCS.live:
            PROCS.stop(p)


class Relay:
    """relay25 with a generated INI file."""

    def __init__(self, work, up, certs, pool, name, valgrind=None):
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        ini = """[server]
listen = 127.0.0.1:{port}
hostname = relay.bench.invalid
log_level = warn
max_clients = 30000
max_clients_per_ip = 30000
{workers}
[upstream]
host = 127.0.0.1
port = {up}
tls = starttls
server_name = localhost
ca_file = {ca}
username = {user}
password = {pw}
pool_size = {pool}
""".format(port=self.port, up=up.starttls, ca=certs / "ca.pem", user=USER,
           pw=PASSWORD, pool=pool,
           workers="workers = %s\n" % WORKERS if WORKERS else "")
        self.pool = pool
        self.mport = free_port() if pool > 0 else None
        if self.mport:
            # the pool's gauge tells when the pool is full (warm)
            ini += "\n[metrics]\nlisten = 127.0.0.1:%d\n" % self.mport
        self.config = self.dir / "relay25.ini"
        fd = os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(ini)
        argv = [RELAY_BIN, "-c", self.config]
        if valgrind:
            argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % valgrind,
                    "--dump-instr=no"] + argv
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY25_")}
        self.p = PROCS.start(argv, self.dir / "relay25.log", env=env)
        slow = 30 if valgrind else 10
        wait_for(lambda: self.p.poll() is not None or smtp_greets(self.port), slow,
                 "relay25 greeting", 0.05)
        if self.p.poll() is not None:
            raise RuntimeError("relay25 exited:\n" + Path(self.p.logpath).read_text()[-3000:])
        self.pid = self.p.pid

    def pool_sessions(self):
        """relay25_upstream_pool_sessions from GET /metrics, or None."""
        if not self.mport:
            return None
        try:
            with socket.create_connection(("127.0.0.1", self.mport), timeout=2) as s:
                s.settimeout(2)
                s.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                data = b""
                while len(data) < 1 << 20:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
        m = re.search(rb"^relay25_upstream_pool_sessions(?:\{[^}]*\})? (\d+)", data, re.M)
        return int(m.group(1)) if m else None

    def warm(self, timeout=5.0):
        """Make relay25 ready for a measurement: one message through it (TLS
        contexts, first allocations, demand for the pool), then, with a
        pool, wait (bounded) until the pool holds pool_size sessions.
        Returns the pool's size reached (None without a pool)."""
        run_loadgen(loadgen_argv(self.port, msgs=1, size=1024, max_time=30), 40)
        if not self.pool:
            return None
        deadline = time.monotonic() + timeout
        n = self.pool_sessions()
        while (n is None or n < self.pool) and time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.pool_sessions()
        if n is None:
            time.sleep(0.3)     # no gauge: give the pool a moment
        return n

    def stop(self):
        return PROCS.stop(self.p, timeout=20)


# ------------------------------------------------------------------ peers

class Peer:
    name = "?"
    queues = False      # True: throughput counted until the upstream has everything

    def stop(self):
        if getattr(self, "p", None) is not None:
            PROCS.stop(self.p)


class Postfix(Peer):
    name = "postfix"
    queues = True

    def __init__(self, work, up, certs):
        if not shutil.which("postfix") or not os.path.exists("/usr/lib/postfix/sbin/master"):
            raise RuntimeError("postfix is not installed (tests/bench/install-peers.sh)")
        if not any(os.path.exists(p) for p in ("/usr/lib/x86_64-linux-gnu/sasl2/libplain.so.2",
                                                 "/usr/lib/sasl2/libplain.so.2")) \
                and not list(Path("/usr/lib").glob("*/sasl2/libplain.so*")):
            raise RuntimeError("libsasl2-modules (PLAIN) is not installed")
        d = self.dir = work / "postfix"
        d.mkdir()
        self.port = free_port()
        (d / "queue").mkdir()
        (d / "data").mkdir()
        (d / "main.cf").write_text("""compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
mydestination =
local_transport = error:local delivery disabled
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{up}
smtp_tls_security_level = encrypt
smtp_tls_CAfile = {ca}
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:{user}:{pw}
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
alias_maps =
alias_database =
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
smtpd_relay_restrictions = permit_mynetworks, reject
message_size_limit = 104857600
biff = no
smtputf8_enable = no
""".format(d=d, up=up.starttls, ca=certs / "ca.pem", user=USER, pw=PASSWORD))
        (d / "master.cf").write_text("""127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
""".format(port=self.port))
        r = subprocess.run(["postfix", "-c", d, "post-install", "create-missing"],
                           capture_output=True, text=True, timeout=60)
        subprocess.run(["chown", "-R", "postfix", d / "data"], timeout=10)
        if not (d / "queue" / "active").exists():
            raise RuntimeError("postfix post-install failed: %s" % (r.stdout + r.stderr)[-500:])
        self.p = PROCS.start(["/usr/lib/postfix/sbin/master", "-c", d, "-d"], d / "master.log")
        wait_for(lambda: self.p.poll() is not None or smtp_greets(self.port), 20,
                 "postfix greeting", 0.1)
        if self.p.poll() is not None:
            raise RuntimeError("postfix master exited: %s" % (d / "maillog").read_text()[-1000:]
                               if (d / "maillog").exists() else "postfix master exited")


class OpenSMTPD(Peer):
    name = "opensmtpd"
    queues = True

    def __init__(self, work, up, certs):
        smtpd = SMTPD_ROOT / "usr" / "sbin" / "smtpd"
        if not smtpd.exists():
            smtpd = Path("/usr/sbin/smtpd")
        if not smtpd.exists():
            raise RuntimeError("OpenSMTPD is not installed (tests/bench/install-peers.sh)")
        d = self.dir = work / "opensmtpd"
        d.mkdir()
        os.chmod(d, 0o755)
        self.port = free_port()
        secrets = d / "secrets"
        fd = os.open(secrets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("bench %s:%s\n" % (USER, PASSWORD))
        conf = d / "smtpd.conf"
        conf.write_text("""table secrets file:{secrets}
listen on 127.0.0.1 port {port}
action "relay" relay host smtp+tls://bench@127.0.0.1:{up} tls no-verify auth <secrets>
match from any for any action "relay"
""".format(secrets=secrets, port=self.port, up=up.starttls))
        os.chmod(conf, 0o644)
        self.spool_clear()
        r = subprocess.run([smtpd, "-n", "-f", conf], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("smtpd -n: %s" % (r.stdout + r.stderr)[-500:])
        self.p = PROCS.start([smtpd, "-d", "-f", conf], d / "smtpd.log")
        wait_for(lambda: self.p.poll() is not None or smtp_greets(self.port), 20,
                 "opensmtpd greeting", 0.1)
        if self.p.poll() is not None:
            raise RuntimeError("smtpd exited: %s" % (d / "smtpd.log").read_text()[-800:])


    # OpenSMTPD's queue is compiled in (/var/spool/smtpd, used by nothing else
    # here: the package is only unpacked): messages an earlier run left in it
    # would be delivered into this run's counts, so it is emptied first and last.
    SPOOL = Path("/var/spool/smtpd")

    def spool_clear(self):
        for sub in ("queue", "incoming", "temporary", "purge", "corrupt", "offline"):
            d = self.SPOOL / sub
            if d.is_dir():
                for e in d.iterdir():
                    if e.is_dir() and not e.is_symlink():
                        shutil.rmtree(e, ignore_errors=True)
                    else:
                        try:
                            e.unlink()
                        except OSError:
                            pass

    def stop(self):
        Peer.stop(self)
        self.spool_clear()


class Msmtpd(Peer):
    name = "msmtpd"

    def __init__(self, work, up, certs):
        msmtpd = shutil.which("msmtpd") or str(MSMTPD_ROOT / "usr" / "bin" / "msmtpd")
        msmtp = shutil.which("msmtp")
        if not os.path.exists(msmtpd) or not msmtp:
            raise RuntimeError("msmtp/msmtpd are not installed (tests/bench/install-peers.sh)")
        d = self.dir = work / "msmtpd"
        d.mkdir()
        self.port = free_port()
        rc = d / "msmtprc"
        fd = os.open(rc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("""defaults
tls on
tls_starttls on
tls_trust_file {ca}
tls_host_override localhost
logfile
syslog off
account default
host 127.0.0.1
port {up}
auth plain
user {user}
password {pw}
""".format(ca=certs / "ca.pem", up=up.starttls, user=USER, pw=PASSWORD))
        self.p = PROCS.start([msmtpd, "--interface=127.0.0.1", "--port=%d" % self.port,
                              "--command=%s -C %s -f %%F --" % (msmtp, rc)], d / "msmtpd.log")
        wait_for(lambda: self.p.poll() is not None or smtp_greets(self.port), 20,
                 "msmtpd greeting", 0.1)
        if self.p.poll() is not None:
            raise RuntimeError("msmtpd exited: %s" % (d / "msmtpd.log").read_text()[-800:])


PEER_CLASSES = {"postfix": Postfix, "opensmtpd": OpenSMTPD, "msmtpd": Msmtpd}
# Peers are far slower than relay25; so that `make bench` stays within its
# 10 minutes they get at most this many messages per run (their msgs/s is
# a rate all the same; the table names the count).
PEER_CAP = {"postfix": {"1k": 600, "4k": 1500, "10m": 20},
            "opensmtpd": {"1k": 20, "4k": 50, "10m": 2},
            "msmtpd": {"1k": 30, "4k": 100, "10m": 2}}
PEER_TIMEOUT = 20       # seconds a peer may keep a client waiting for a reply
LETTERS = {"direct": "a", "relay25": "b", "pool": "c", "postfix": "d",
           "opensmtpd": "e", "msmtpd": "f"}


# ------------------------------------------------------------------ bench

class Bench:
    def __init__(self):
        self.work = Path(tempfile.mkdtemp(prefix="relay25-bench-"))
        os.chmod(self.work, 0o755)      # peers drop privileges
        self.certs = self.work / "certs"
        subprocess.run(["sh", str(MKCERTS), str(self.certs)], check=True, timeout=60)
        for f in self.certs.iterdir():
            if f.suffix == ".pem":
                os.chmod(f, 0o644)
        self.up = Upstream(self.work, self.certs)
        self.peers = {}
        self.skipped = {}
        self.results = {}       # (scenario, path) -> list of run dicts
        self.flow_relays = {}   # path -> Relay kept across flow runs
        self.notes = []

    def close(self):
        for p in self.peers.values():
            p.stop()
        PROCS.stop_all()
        if not KEEP:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            log("work directory kept: %s" % self.work)

    def start_peers(self):
        for name in PEERS:
            if name not in PEER_CLASSES:
                self.skipped[name] = "unknown peer"
                continue
            try:
                self.peers[name] = PEER_CLASSES[name](self.work, self.up, self.certs)
                # one message through it, so its first delivery is not measured
                before = self.up.msgs()
                r = run_loadgen(loadgen_argv(self.peers[name].port, msgs=1, size=1024,
                                             max_time=30), 40)
                if r["ok"] != 1:
                    raise RuntimeError("test message refused: %s" % r["errors"])
                wait_for(lambda: self.up.msgs() > before, 30, "%s delivering" % name, 0.05)
                log("peer %s ready on port %d" % (name, self.peers[name].port))
            except Exception as e:  # noqa: BLE001 - a peer that fails is skipped
                self.skipped[name] = str(e).strip().splitlines()[0][:200] if str(e).strip() else repr(e)
                log("peer %s skipped: %s" % (name, self.skipped[name]))
                p = self.peers.pop(name, None)
                if p:
                    p.stop()

    def record(self, scen, path, res):
        self.results.setdefault((scen, path), []).append(res)

    # ---- one measurement
    def measure_flow(self, path, msgs, size, conns, per_session=1, rss=False):
        """msgs messages of size bytes over conns connections along path."""
        ca = self.certs / "ca.pem"
        tmax = 240
        relay = None
        before = self.up.msgs()
        extra = {}
        if path == "direct":
            argv = loadgen_argv(self.up.starttls, "starttls", True, ca, msgs=msgs, size=size,
                                conns=conns, per_session=per_session, max_time=tmax)
        elif path in ("relay25", "pool"):
            # one relay25 per path for all flow runs (a pool takes seconds
            # to fill); warm() before every measurement
            # (RSS runs start a fresh one: growth is from a fresh start)
            relay = None if rss else self.flow_relays.get(path)
            if relay is None or relay.p.poll() is not None:
                relay = Relay(self.work, self.up, self.certs, POOL if path == "pool" else 0,
                              "relay-%s" % path)
                if not rss:
                    self.flow_relays[path] = relay
            extra["pool_warm"] = relay.warm(timeout=6)
            before = self.up.msgs()
            base = rss_kib(relay.pid)
            reset_hwm(relay.pid)
            argv = loadgen_argv(relay.port, msgs=msgs, size=size, conns=conns,
                                per_session=per_session, max_time=tmax)
        else:
            peer = self.peers[path]
            argv = loadgen_argv(peer.port, msgs=msgs, size=size, conns=conns,
                                per_session=per_session, max_time=tmax,
                                timeout=PEER_TIMEOUT)
        try:
            t0 = time.monotonic()
            res = run_loadgen(argv, tmax + 30)
            if path in self.peers and self.peers[path].queues:
                want = before + res["ok"]
                try:
                    wait_for(lambda: self.up.msgs() >= want, 300, "%s to deliver" % path, 0.01)
                except RuntimeError as e:
                    res["errors"].append(str(e))
                t1 = time.monotonic()
                got = self.up.msgs() - before
                res["submit_mps"] = res["mps"]
                res["mps"] = got / (t1 - t0)
                res["mib_s"] = got * size / MIB / (t1 - t0)
                res["delivered"] = got
            else:
                res["delivered"] = self.up.msgs() - before
            if relay is not None and rss:
                extra["rss_base_kib"] = base
                extra["hwm_kib"] = hwm_kib(relay.pid)
                extra["growth_kib"] = extra["hwm_kib"] - base
            res.update(extra)
            return res
        finally:
            if relay is not None and relay.p.poll() is not None:
                self.flow_relays.pop(path, None)
                raise RuntimeError("relay25 exited during the run:\n" +
                                   Path(relay.p.logpath).read_text()[-2000:])
            if relay is not None and rss:
                relay.stop()

    def measure_held(self, path, sessions, hold, size=1024):
        """RSS per held session (idle after EHLO, or mid-DATA)."""
        relay = Relay(self.work, self.up, self.certs, POOL if path == "pool" else 0,
                      "relay-%s" % path)
        try:
            pool_warm = relay.warm(timeout=6)
            time.sleep(0.2)
            base = rss_kib(relay.pid)
            argv = loadgen_argv(relay.port, conns=sessions, hold=hold, size=size,
                                hold_max=60, connect_batch=500, max_time=240, timeout=120)

            def at_hold(n):
                time.sleep(0.2)
                return rss_kib(relay.pid), self.up.counts()["conns"]

            res, (held_rss, _) = run_loadgen_held(argv, 270, at_hold)
            res["sessions_held"] = res.get("held") or 0
            n = sessions - (res["err"] if hold == "ehlo" else 0)
            res["rss_base_kib"] = base
            res["rss_held_kib"] = held_rss
            res["kib_per_session"] = (held_rss - base) / max(1, n)
            res["pool_warm"] = pool_warm
            return res
        finally:
            relay.stop()

    # ---- scenarios
    def ceiling(self):
        """The upstream's own ceiling (loadgen straight at it)."""
        ca = self.certs / "ca.pem"
        n = scaled(2000, 200)
        rows = {}
        for label, kw in (
                ("new TLS+AUTH sessions/s, 1 conn", dict(msgs=scaled(1000, 100), conns=1)),
                ("new TLS+AUTH sessions/s, 50 conns", dict(msgs=n, conns=50)),
                ("warm session, 1 conn (ESP reply time)", dict(msgs=n, conns=1, per_session=n)),
                ("warm sessions, 50 conns", dict(msgs=n * 5, conns=50, per_session=n)),
                ("implicit TLS new sessions/s, 1 conn", dict(msgs=scaled(1000, 100), conns=1,
                                                             mode="implicit"))):
            mode = kw.pop("mode", "starttls")
            port = self.up.implicit if mode == "implicit" else self.up.starttls
            runs = []
            for _ in range(RUNS):
                runs.append(run_loadgen(loadgen_argv(port, mode, True, ca, size=1024,
                                                     max_time=120, **kw), 150))
            rows[label] = runs
        runs = []
        for _ in range(RUNS):
            runs.append(run_loadgen(loadgen_argv(self.up.starttls, "starttls", True, ca,
                                                 size=10 * MIB, msgs=4, conns=1, per_session=4,
                                                 max_time=120), 150))
        rows["10 MiB on a warm session, 1 conn"] = runs
        self.ceiling_rows = rows
        self.py_ceiling_rows = self.python_esp_ceiling(ca)
        self.esp_reply_ms = med([r["p50_ms"] for r in rows["warm session, 1 conn (ESP reply time)"]])

    def python_esp_ceiling(self, ca):
        """The same for the Python test ESP (tests/esp/esp.py --discard),
        which is why the bench uses bench-upstream."""
        d = self.work / "esp-py"
        d.mkdir()
        ready = d / "ready.json"
        p = PROCS.start(["/usr/bin/python3", ESP_PY, "--dir", d / "msgs", "--cert",
                         self.certs / "server.pem", "--key", self.certs / "server.key",
                         "--starttls-port", "0", "--user", USER, "--password", PASSWORD,
                         "--ready-file", ready, "--discard"], d / "esp.log")
        rows = {}
        try:
            wait_for(lambda: ready.exists() or p.poll() is not None, 20, "esp.py ready")
            port = json.loads(ready.read_text())["starttls"]
            n = scaled(2000, 200)
            for label, kw in (
                    ("new TLS+AUTH sessions/s, 1 conn", dict(msgs=scaled(500, 100), conns=1)),
                    ("new TLS+AUTH sessions/s, 50 conns", dict(msgs=scaled(1000, 100), conns=50)),
                    ("warm session, 1 conn (ESP reply time)", dict(msgs=n, conns=1, per_session=n)),
                    ("warm sessions, 50 conns", dict(msgs=n * 2, conns=50, per_session=n))):
                rows[label] = [run_loadgen(loadgen_argv(port, "starttls", True, ca, size=1024,
                                                        max_time=120, **kw), 150)]
        except Exception as e:  # noqa: BLE001
            rows = {"failed: %s" % str(e)[:200]: []}
        finally:
            PROCS.stop(p)
        return rows

    def run_flow_scenario(self, scen, msgs, size, conns, rss=False, peers=True):
        paths = ["direct", "relay25", "pool"] + (list(self.peers) if peers else [])
        for run in range(RUNS):
            order = paths[run % len(paths):] + paths[:run % len(paths)]
            for path in order:
                t = time.monotonic()
                n = msgs
                if path in PEER_CAP:
                    n = max(min(msgs, conns), min(msgs, int(PEER_CAP[path][scen] * max(SCALE, 0.1))))
                try:
                    res = self.measure_flow(path, n, size, conns, rss=rss)
                    res["msgs"] = n
                except Exception as e:  # noqa: BLE001
                    res = {"failed": str(e)[:300]}
                self.record(scen, path, res)
                log("%s run %d %-9s %s (%.1fs)" % (scen, run + 1, path, short(res),
                                                   time.monotonic() - t))

    def run_held_scenario(self, scen, sessions, hold, size):
        for run in range(RUNS):
            for path in ("relay25", "pool"):
                t = time.monotonic()
                try:
                    res = self.measure_held(path, sessions, hold, size)
                except Exception as e:  # noqa: BLE001
                    res = {"failed": str(e)[:300]}
                self.record(scen, path, res)
                log("%s run %d %-9s %s (%.1fs)" % (scen, run + 1, path, short(res),
                                                   time.monotonic() - t))

    def callgrind(self):
        """relay25's instructions per message (1 KiB, one session per
        message), pool_size 0 and POOL: (Ir(N) - Ir(N0)) / (N - N0)."""
        if not shutil.which("valgrind"):
            self.callgrind_rows = {"skipped": "valgrind is not installed"}
            return
        n0, n = 10, max(20, scaled(200))
        out = {}
        for label, pool in (("relay25", 0), ("pool", POOL)):
            irs, fns = {}, {}
            for count in (n0, n):
                cg = self.work / ("callgrind.%s.%d.out" % (label, count))
                relay = Relay(self.work, self.up, self.certs, pool, "cg-%s-%d" % (label, count),
                              valgrind=cg)
                try:
                    relay.warm(timeout=30)  # the pool fills slowly under valgrind
                    res = run_loadgen(loadgen_argv(relay.port, msgs=count, size=1024,
                                                   max_time=240, timeout=60), 260)
                finally:
                    relay.stop()
                if res["ok"] != count:
                    raise RuntimeError("callgrind run: %s" % short(res))
                irs[count] = callgrind_total(cg)
                fns[count] = callgrind_functions(cg)
            # the steady state: what one more message costs, per function
            per = {}
            for fn, ir in fns[n].items():
                d = (ir - fns[n0].get(fn, 0)) / (n - n0)
                if d > 0:
                    per[fn] = d
            via = callgrind_callers(self.work / ("callgrind.%s.%d.out" % (label, n)))
            per = {("%s (in %s)" % (fn, via[fn]) if fn in via else fn): ir
                   for fn, ir in per.items()}
            ranked = sorted(per.items(), key=lambda kv: -kv[1])
            out[label + "_top"] = ranked[:12]
            out[label + "_own"] = [kv for kv in ranked if "/relay25]" in kv[0]][:10]
            out[label] = {"ir_per_msg": (irs[n] - irs[n0]) / (n - n0), "n": n,
                          "ir_total": irs[n]}
            log("callgrind %s: %.0f Ir/message" % (label, out[label]["ir_per_msg"]))
        self.callgrind_rows = out

    def syscalls(self):
        """relay25's system calls per message (strace -c -f on the running
        relay25; 1 KiB, one session per message)."""
        if not shutil.which("strace"):
            self.syscall_rows = {"skipped": "strace is not installed"}
            return
        n = scaled(500, 50)
        out = {}
        for label, pool in (("relay25", 0), ("pool", POOL)):
            relay = Relay(self.work, self.up, self.certs, pool, "st-%s" % label)
            try:
                relay.warm(timeout=6)
                run_loadgen(loadgen_argv(relay.port, msgs=20, size=1024, max_time=30), 40)
                time.sleep(0.3)
                st_out = self.work / ("strace.%s.txt" % label)
                st = PROCS.start(["strace", "-c", "-f", "-p", relay.pid, "-o", st_out],
                                 self.work / ("strace.%s.log" % label))
                time.sleep(0.5)         # attached
                res = run_loadgen(loadgen_argv(relay.port, msgs=n, size=1024, max_time=120), 150)
                time.sleep(0.2)
                os.kill(st.pid, signal.SIGINT)
                try:
                    st.wait(10)
                except subprocess.TimeoutExpired:
                    pass
                PROCS.stop(st)
            finally:
                relay.stop()
            calls = {}
            errors = {}
            for line in st_out.read_text().splitlines():
                f = line.split()
                if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                    calls[f[-1]] = int(f[3])
                    errors[f[-1]] = int(f[4]) if len(f) == 6 else 0
            ok = max(1, res["ok"])
            out[label] = {"per_msg": sum(calls.values()) / ok, "n": res["ok"],
                          "top": sorted(((c / ok, name, errors[name] / ok)
                                         for name, c in calls.items()), reverse=True)[:8]}
            log("strace %s: %.1f syscalls/message" % (label, out[label]["per_msg"]))
        self.syscall_rows = out

    def run(self):
        t0 = time.monotonic()
        self.load_start = os.getloadavg()[0]
        log("work directory %s; scale %.3g, %d runs" % (self.work, SCALE, RUNS))
        self.ceiling()
        log("upstream ceiling measured (%.0fs)" % (time.monotonic() - t0))
        self.start_peers()
        self.flow_msgs = {"1k": scaled(2000, 20), "4k": scaled(5000, 50), "10m": scaled(20, 2)}
        if "1k" in SCENARIOS:
            self.run_flow_scenario("1k", scaled(2000, 20), 1024, 1)
        if "4k" in SCENARIOS:
            self.run_flow_scenario("4k", scaled(5000, 50), 4096, 50)
        if "10m" in SCENARIOS:
            self.run_flow_scenario("10m", scaled(20, 2), 10 * MIB, 2, rss=True)
        for relay in self.flow_relays.values():
            relay.stop()
        self.flow_relays = {}
        if "idle" in SCENARIOS:
            self.run_held_scenario("idle", scaled(10000, 100), "ehlo", 1024)
        if "active" in SCENARIOS:
            self.run_held_scenario("active", scaled(500, 20), "data", 64 * 1024)
        self.callgrind_rows = {}
        self.syscall_rows = {}
        if CALLGRIND:
            try:
                self.callgrind()
            except Exception as e:  # noqa: BLE001
                self.callgrind_rows = {"skipped": str(e)[:300]}
            try:
                self.syscalls()
            except Exception as e:  # noqa: BLE001
                self.syscall_rows = {"skipped": str(e)[:300]}
        self.elapsed = time.monotonic() - t0


def short(res):
    if "failed" in res:
        return "FAILED " + res["failed"]
    s = "ok=%s err=%s mps=%.1f p50=%.2fms" % (res.get("ok"), res.get("err"),
                                                res.get("mps", 0), res.get("p50_ms", 0))
    if "kib_per_session" in res:
        s += " %.1f KiB/session" % res["kib_per_session"]
    if "growth_kib" in res:
        s += " rss+%d KiB" % res["growth_kib"]
    if res.get("errors"):
        s += " errors=%s" % res["errors"][:2]
    return s


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("no totals in %s" % path)


def callgrind_callers(path):
    """{unnamed function: its heaviest named caller} - libwolfssl is
    stripped, so its internal functions are known by their callers."""
    r = subprocess.run(["callgrind_annotate", "--tree=caller", "--threshold=100", "--auto=no",
                        str(path)], capture_output=True, text=True, timeout=120)
    names, callers = {}, []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?([<*])\s+(\S.*?)(?: \([\d,]+x\))? (\[.*\])$",
                     line)
        if not m:
            if not line.strip():
                callers = []
            continue
        ir, kind, fn = int(m.group(1).replace(",", "")), m.group(2), m.group(3).strip()
        if kind == "<":
            callers.append((ir, fn))
            continue
        key = re.sub(r"^\./", "", fn) + " " + m.group(4)
        named = [c for c in callers if not c[1].startswith("???:0x")]
        if fn.startswith("???:0x") and named:
            names[key] = max(named)[1].replace("???:", "")
        callers = []
    return names


def callgrind_functions(path):
    """{function: self Ir} of a callgrind output file (every function)."""
    r = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", str(path)],
                       capture_output=True, text=True, timeout=120)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$", line)
        if m and "PROGRAM TOTALS" not in line and ":" in m.group(2):
            fn = re.sub(r"^\./", "", m.group(2).strip())
            out[fn] = out.get(fn, 0) + int(m.group(1).replace(",", ""))
    return out


# ------------------------------------------------------------------ report

def fmt(v, spec="%.0f"):
    return "-" if v is None else spec % v


def report(b):
    L = []
    L.append("# relay25 benchmark results")
    L.append("")
    L.append("Generated by `make bench` (tests/bench/bench.py) on %s; %s; load %.1f at the "
             "start; scale %.3g, median of %d runs; whole bench %.0f s." % (
                 time.strftime("%Y-%m-%d %H:%M %Z"), machine(), b.load_start, SCALE, RUNS,
                 b.elapsed))
    L.append("")
    L.append("Upstream: build/bench/bench-upstream (C, libev + wolfSSL, STARTTLS + AUTH, "
             "bodies discarded), 1 worker. Load: build/bench/bench-loadgen, one session per "
             "message unless said otherwise; latency = from the application starting on "
             "the message (connect) to the 250 for its end of data. relay25: %s, "
             "log_level = warn, pool_max_messages and the other pool keys at their "
             "defaults." % ("workers = " + WORKERS if WORKERS else "default workers"))
    L.append("")
    L.append("## Upstream ceiling (loadgen straight at bench-upstream)")
    L.append("")
    L.append("| measurement | msgs/s | p50 ms | p99 ms | MiB/s |")
    L.append("|---|---:|---:|---:|---:|")
    for label, runs in b.ceiling_rows.items():
        L.append("| %s | %s | %s | %s | %s |" % (
            label, fmt(med([r["mps"] for r in runs])),
            fmt(med([r["p50_ms"] for r in runs]), "%.3f"),
            fmt(med([r["p99_ms"] for r in runs]), "%.3f"),
            fmt(med([r["mib_s"] for r in runs]), "%.1f")))
    L.append("")
    L.append("For comparison, the Python test ESP (tests/esp/esp.py --discard), one run each:")
    L.append("")
    L.append("| measurement | msgs/s | p50 ms | p99 ms |")
    L.append("|---|---:|---:|---:|")
    for label, runs in getattr(b, "py_ceiling_rows", {}).items():
        L.append("| %s | %s | %s | %s |" % (
            label, fmt(med([r["mps"] for r in runs])),
            fmt(med([r["p50_ms"] for r in runs]), "%.3f"),
            fmt(med([r["p99_ms"] for r in runs]), "%.3f")))
    L.append("")
    L.append("## Paths side by side")
    L.append("")
    L.append("(a) direct STARTTLS+AUTH per message, (b) relay25 pool_size = 0, (c) relay25 "
             "pool_size = %d, (d) Postfix, (e) OpenSMTPD, (f) msmtpd. Ratios are medians of the "
             "per-run ratios of msgs/s (MiB/s for 10 MiB) against (a) and (d) measured in "
             "the same run. Queueing peers: msgs/s counts until the upstream has every "
             "message; their latency is the queue's acknowledgement." % POOL)
    L.append("")
    L.append("| scenario | path | msgs/s | MiB/s | p50 ms | p90 ms | p99 ms | errors | vs (a) | vs (d) | RSS |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    names = {"1k": "%d x 1 KiB, 1 client" % scaled(2000, 20),
             "4k": "%d x 4 KiB, 50 clients" % scaled(5000, 50),
             "10m": "%d x 10 MiB, 2 clients" % scaled(20, 2),
             "idle": "%d idle sessions" % scaled(10000, 100),
             "active": "%d sessions mid-DATA (64 KiB msg)" % scaled(500, 20)}
    for scen in ("1k", "4k", "10m"):
        if scen not in SCENARIOS:
            continue
        paths = ["direct", "relay25", "pool"] + list(b.peers)
        metric = "mib_s" if scen == "10m" else "mps"
        for path in paths:
            runs = b.results.get((scen, path), [])
            good = [r for r in runs if "failed" not in r]
            if not good:
                why = runs[0]["failed"] if runs else "not run"
                L.append("| %s | (%s) %s | failed: %s |  |  |  |  |  |  |  |  |" % (
                    names[scen], LETTERS[path], path, why[:120]))
                continue

            def ratio(ref):
                rs = []
                refruns = b.results.get((scen, ref), [])
                for i, r in enumerate(runs):
                    if i < len(refruns) and "failed" not in r and "failed" not in refruns[i] \
                            and refruns[i].get(metric):
                        rs.append(r[metric] / refruns[i][metric])
                return med(rs)
            ra = ratio("direct")
            rd = ratio("postfix") if "postfix" in b.peers else None
            rss = ""
            if path == "pool":
                pw = [r.get("pool_warm") for r in good if r.get("pool_warm") is not None]
                if pw:
                    rss += "pool %d-%d/%d idle at start; " % (min(pw), max(pw), POOL)
            if path in ("relay25", "pool") and scen == "10m":
                rss = "peak %s KiB, growth %s KiB" % (fmt(med([r.get("hwm_kib") for r in good])),
                                                     fmt(med([r.get("growth_kib") for r in good])))
            errs = med([r["err"] for r in good])
            if good[0].get("msgs", 0) < b.flow_msgs.get(scen, 0):
                rss += " %d msgs per run" % good[0]["msgs"]
            delivered_short = [r for r in good if r.get("delivered", r["ok"]) < r["ok"]]
            if delivered_short:
                rss += " (upstream got fewer than acknowledged!)"
            L.append("| %s | (%s) %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                names[scen], LETTERS[path], path,
                fmt(med([r["mps"] for r in good]), "%.1f" if scen == "10m" else "%.0f"),
                fmt(med([r["mib_s"] for r in good]), "%.1f"),
                fmt(med([r["p50_ms"] for r in good]), "%.2f"),
                fmt(med([r["p90_ms"] for r in good]), "%.2f"),
                fmt(med([r["p99_ms"] for r in good]), "%.2f"),
                fmt(errs), fmt(ra, "%.2fx"), fmt(rd, "%.2fx"), rss))
    for scen in ("idle", "active"):
        if scen not in SCENARIOS:
            continue
        for path in ("relay25", "pool"):
            runs = b.results.get((scen, path), [])
            good = [r for r in runs if "failed" not in r]
            if not good:
                why = runs[0]["failed"] if runs else "not run"
                L.append("| %s | (%s) %s | failed: %s |  |  |  |  |  |  |  |  |" % (
                    names[scen], LETTERS[path], path, why[:120]))
                continue
            pw = [r.get("pool_warm") for r in good if r.get("pool_warm") is not None]
            L.append("| %s | (%s) %s | - | - | - | - | - | %s | - | - | %s%s KiB/session "
                     "(base %s KiB, held %s KiB) |" % (
                         names[scen], LETTERS[path], path, fmt(med([r["err"] for r in good])),
                         "pool %d-%d/%d idle at start; " % (min(pw), max(pw), POOL) if pw else "",
                         fmt(med([r["kib_per_session"] for r in good]), "%.1f"),
                         fmt(med([r["rss_base_kib"] for r in good])),
                         fmt(med([r["rss_held_kib"] for r in good]))))
    if b.skipped:
        L.append("")
        for name, why in b.skipped.items():
            L.append("Peer %s skipped: %s" % (name, why))
    L.append("")
    L.append("## Targets (measured, not asserted)")
    L.append("")
    L += targets(b)
    L.append("")
    L.append("## Instructions per message (valgrind --tool=callgrind, 1 KiB, one session per message)")
    L.append("")
    cg = b.callgrind_rows
    if not cg:
        L.append("not run (BENCH_CALLGRIND=0)")
    elif "skipped" in cg:
        L.append("skipped: %s" % cg["skipped"])
    else:
        for label in ("relay25", "pool"):
            if label in cg:
                L.append("- %s: %.0f Ir per message ((Ir(%d) - Ir(10)) / %d)" % (
                    {"relay25": "(b) pool_size = 0", "pool": "(c) pool_size = %d" % POOL}[label],
                    cg[label]["ir_per_msg"], cg[label]["n"], cg[label]["n"] - 10))
        for label in ("relay25", "pool"):
            for key, what in (("_top", "all code"), ("_own", "relay25's own code")):
                top = cg.get(label + key)
                if not top:
                    continue
                L.append("")
                L.append("Self Ir per message by function (Ir(%d) - Ir(10), / %d), %s, %s:" % (
                    cg[label]["n"], cg[label]["n"] - 10, label, what))
                L.append("")
                L.append("| Ir/msg | % of msg | function |")
                L.append("|---:|---:|---|")
                for fn, ir in top:
                    L.append("| %.0f | %.1f | `%s` |" % (ir, 100 * ir / cg[label]["ir_per_msg"],
                                                        fn[:110]))
    L.append("")
    L.append("## System calls per message (strace -c -f on relay25, 1 KiB, one session per message)")
    L.append("")
    sc = b.syscall_rows
    if not sc:
        L.append("not run (BENCH_CALLGRIND=0)")
    elif "skipped" in sc:
        L.append("skipped: %s" % sc["skipped"])
    else:
        L.append("| path | syscalls/msg | top calls per message (failed ones) |")
        L.append("|---|---:|---|")
        for label in ("relay25", "pool"):
            if label in sc:
                L.append("| (%s) %s | %.1f | %s |" % (
                    LETTERS[label], label, sc[label]["per_msg"],
                    ", ".join("%s %.1f%s" % (name, c, " (%.1f)" % e if e else "")
                              for c, name, e in sc[label]["top"])))
    return "\n".join(L) + "\n"


def run_ratio(b, scen, path, ref, metric):
    """Median over runs of path's metric / ref's metric in the same run."""
    runs, refs = b.results.get((scen, path), []), b.results.get((scen, ref), [])
    rs = [r[metric] / q[metric] for r, q in zip(runs, refs)
          if "failed" not in r and "failed" not in q and q.get(metric)]
    return med(rs)


def targets(b):
    out = []

    def m(scen, path, key):
        return med([r.get(key) for r in b.results.get((scen, path), []) if "failed" not in r])

    p50 = m("1k", "pool", "p50_ms")
    if p50 is not None:
        out.append("- warm pool, 1 KiB one at a time: p50 %.3f ms vs the ESP's own reply time "
                   "%.3f ms on a warm session: +%.3f ms (target <= +0.3 ms)" % (
                       p50, b.esp_reply_ms, p50 - b.esp_reply_ms))
    r = run_ratio(b, "1k", "pool", "direct", "mps")
    if r:
        out.append("- warm pool, 1 KiB one at a time: %.2fx the direct path's msgs/s (median of "
                   "per-run ratios; target >= 1.5x)" % r)
    best = None
    for p in b.peers:
        v = m("4k", p, "mps")
        if v and (best is None or v > best[1]):
            best = (p, v)
    c4 = m("4k", "pool", "mps")
    b4 = m("4k", "relay25", "mps")
    if best and c4:
        out.append("- 50 clients: pool %.0f msgs/s, pool_size 0 %.0f msgs/s = %.2fx / %.2fx the "
                   "best peer (%s, %.0f delivered msgs/s; per-run ratios %s / %s) (target >= 3x)" % (
                       c4, b4 or 0, c4 / best[1], (b4 or 0) / best[1], best[0], best[1],
                       fmt(run_ratio(b, "4k", "pool", best[0], "mps"), "%.2fx"),
                       fmt(run_ratio(b, "4k", "relay25", best[0], "mps"), "%.2fx")))
    for path in ("relay25", "pool"):
        v = m("idle", path, "kib_per_session")
        if v is not None:
            out.append("- %s: %.1f KiB RSS per idle client session (target <= 8 KiB)" % (path, v))
        v = m("active", path, "kib_per_session")
        if v is not None:
            out.append("- %s: %.1f KiB RSS per active TLS-proxied session (target <= 100 KiB)"
                       % (path, v))
    for path in ("relay25", "pool"):
        v = m("10m", path, "mib_s")
        g = m("10m", path, "growth_kib")
        r = run_ratio(b, "10m", path, "direct", "mib_s")
        if r and v:
            out.append("- %s: 10 MiB at %.1f MiB/s = %.0f%% of the direct path (median of per-run "
                       "ratios; target >= 80%%), RSS growth %s KiB (target < 1024 KiB)" % (
                           path, v, 100 * r, fmt(g)))
    return out


def machine():
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                     if l.startswith("model name"))
    except (OSError, StopIteration):
        model = "?"
    return "%d CPUs (%s), load %.1f at the end" % (os.cpu_count() or 0, model, os.getloadavg()[0])


def main():
    for b in (UPSTREAM_BIN, LOADGEN_BIN, RELAY_BIN):
        if not os.access(b, os.X_OK):
            sys.exit("bench: %s is missing (make bench builds it)" % b)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log("RLIMIT_NOFILE stays at %d" % hard)
    bench = Bench()

    def on_signal(sig, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_signal)
    try:
        bench.run()
        text = report(bench)
        sys.stdout.write(text)
        OUT.write_text(text)
        log("written to %s" % OUT)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
