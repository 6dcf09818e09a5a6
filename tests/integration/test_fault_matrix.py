"""test_fault_matrix.py - the fault-injection matrix (issue 3): every way the
ESP or the client can fail, table-driven, against one relay25 process.

ESP-side cells switch the test ESP's faults at run time (its DIR/faults
file) so one ESP and one relay25 (command_timeout = data_timeout =
connect_timeout = 2s) serve the whole column; "connection refused" points
the same relay25 at a refusing port by SIGHUP and back. Client-side cells
misbehave on a raw socket. For EVERY cell:

  * the client never got 250 for a message the ESP did not store with 250
    (every reply the client received is parsed, and every "queued as" id it
    saw must be an id the ESP stored in that cell);
  * the ESP stored no partial and no duplicated message: each message stored
    in the cell is byte-identical to one the client sent in full, at most
    once, and (but for the one documented eod cell) only if the client got
    its 250;
  * the same relay25 process then delivers one normal message (byte-exact);
  * the cell's own expectation (the reply at the failing step) holds.
  (Under SANITIZE=1 the harness fails the test on any sanitizer report.)

The matrix is printed in the test notes and written to
/tmp/relay25-notes/fault-matrix.md. One cell that needs a slow session
(every ESP reply one byte per 100 ms, with generous timeouts, so it must
deliver) runs in a thread beside the main matrix with its own ESP and
relay25.
"""

import hashlib
import os
import random
import re
import smtplib
import threading
import time
from pathlib import Path

from lib import (CLIENT_NAME, SLOW, SANITIZE, RawClient, RelayTestCase, Reply,
                 make_message, upstream_for, wait_for)

NOTES_DIR = Path("/tmp/relay25-notes")
REPLY_WAIT = 15.0           # seconds for any single reply in a cell (x SLOW)
SHORT = {"command_timeout": "2s", "data_timeout": "2s"}


# ---------------------------------------------------------------- helpers

def sha(b):
    return hashlib.sha256(b).hexdigest()


def stuff(msg):
    """Dot-stuff exact CRLF message bytes (no normalisation) + end marker."""
    assert msg.endswith(b"\r\n")
    out = (b"." + msg) if msg.startswith(b".") else msg
    return out.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def parse_replies(data):
    """Every complete SMTP reply in a byte transcript: list of line lists."""
    out, cur = [], []
    for raw in data.split(b"\n"):
        if not raw:
            continue
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        cur.append(line)
        if len(line) < 4 or line[3] != "-":
            out.append(cur)
            cur = []
    return out


def code_matches(reply, spec):
    """spec 'CODES[ ENH]': CODES '451', '4xx' or '451/421'; ENH a prefix of
    the enhanced code (e.g. '4.4.1', '4.4.')."""
    if reply is None:
        return False
    codes, _, enh = spec.partition(" ")
    ok = False
    for c in codes.split("/"):
        if c.endswith("xx"):
            ok = ok or str(reply.code)[0] == c[0]
        else:
            ok = ok or reply.code == int(c)
    if ok and enh:
        ok = reply.text.startswith(enh)
    return ok


class RecClient(RawClient):
    """RawClient; its transcript keeps every byte the server sent."""


class Run:
    """One cell's client session: labelled replies, messages sent in full."""

    def __init__(self, port, reply_wait=REPLY_WAIT):
        self.c = RecClient(port)
        self.reply_wait = reply_wait
        self.dropped = False        # the client went away on purpose
        self.closed_first = False   # relay25 closed before the client quit
        self.steps = []             # (label, Reply or None, seconds since start)
        self.took = {}              # label: seconds from sending to the reply
        self.sent = []              # messages sent completely (with the dot)
        self.t0 = time.monotonic()
        self.closed_by_us = False

    def wait(self, label, timeout=None):
        timeout = timeout or self.reply_wait
        try:
            r = self.c.reply_or_eof(timeout * SLOW)
        except AssertionError:
            r = None
            label += "(no reply)"
        self.steps.append((label, r, time.monotonic() - self.t0))
        return r

    def send(self, data):
        try:
            self.c.send(data)
            return True
        except OSError:
            return False

    def cmd(self, label, line):
        t = time.monotonic()
        if not self.send(line.encode() + b"\r\n"):
            self.steps.append((label + "(send failed)", None, time.monotonic() - self.t0))
            return None
        r = self.wait(label)
        self.took[label] = time.monotonic() - t
        return r

    def greet(self):
        r = self.wait("greeting")
        if r is None or r.code != 220:
            return False
        r = self.cmd("EHLO", "EHLO " + CLIENT_NAME)
        return r is not None and r.code == 250

    def body(self, msg, wire=None):
        """Send the body (in a thread: relay25 may stop reading), then the
        reply to the end of data."""
        wire = stuff(msg) if wire is None else wire
        done = []

        def go():
            done.append(self.send(wire))
        t = threading.Thread(target=go, daemon=True)
        t0 = time.monotonic()
        t.start()
        r = self.wait("EOD", timeout=self.reply_wait + 15)
        self.took["EOD"] = time.monotonic() - t0
        t.join(30)
        if done and done[0]:
            self.sent.append(msg)
        return r

    def transaction(self, msg, rcpts=("r@example.test",)):
        """MAIL, RCPT..., DATA, body as far as the replies allow."""
        r = self.cmd("MAIL", "MAIL FROM:<s@example.test>")
        if r is None or r.code != 250:
            return r
        ok = 0
        for a in rcpts:
            r = self.cmd("RCPT", "RCPT TO:<%s>" % a)
            if r is None:
                return r
            ok += r.code == 250
        r = self.cmd("DATA", "DATA")
        if r is None or r.code != 354:
            return r
        return self.body(msg)

    def quit(self):
        if self.c.eof:
            self.closed_first = True
        elif self.send(b"QUIT\r\n"):
            self.wait("QUIT", timeout=5)
        self.c.close()

    def close(self):
        """The client goes away (on purpose, or after relay25 closed)."""
        if self.c.eof:
            self.closed_first = True
        else:
            self.dropped = True
        self.c.close()

    def reply(self, label):
        for lb, r, _t in self.steps:
            if lb == label:
                return r
        return None

    def elapsed(self, label):
        if label in self.took:
            return self.took[label]
        for lb, _r, t in self.steps:
            if lb == label:
                return t
        return None

    def summary(self):
        """'MAIL 451 4.4.1 (2.0s)' for the first step that was not a
        success, else the last step; '+closed' if relay25 closed first."""
        pick = None
        steps = [x for x in self.steps if x[0] not in ("greeting", "EHLO", "QUIT")]
        eod = [x for x in steps if x[0] == "EOD"]
        if eod:
            pick = eod[-1]
        elif steps and steps[-1][1] is not None and steps[-1][1].code == 421:
            pick = steps[-1]
        else:
            for lb, r, t in steps:
                if r is None or r.code >= 400:
                    pick = (lb, r, t)
                    break
                pick = (lb, r, t)
        if pick is None:
            s = "-"
        else:
            lb, r, t = pick
            if r is None:
                s = "%s: no reply/EOF (%.1fs)" % (lb, t)
            else:
                enh = r.text.split(" ", 1)[0] if re.match(r"\d\.\d+\.\d+", r.text) else ""
                s = "%s %d %s" % (lb, r.code, enh)
                if t >= 1.0:
                    s += " (%.1fs)" % t
        if self.dropped:
            s += ", client dropped"
        if self.closed_first:
            s += ", relay25 closed"
        return s.strip()


class Cell:
    """One row of the matrix.

    faults: ESP fault specs for the cell's connections.
    script(tc, run): the client side; default: greet + one transaction.
    expect: {label: spec} (see code_matches) the cell's own expectation.
    deliver: True - the message must be stored exactly once (client 250);
             False - nothing may be stored;
             "esp-accepted" - the ESP stores it with its 250 but the client
             may get a 4xx (the ESP's 250 was unreadable): at most once.
    no_auth: no AUTH may reach the ESP in this cell (unproven certificate).
    """

    def __init__(self, name, faults=(), script=None, expect=None, deliver=False,
                 no_auth=False, pre=None, post=None, check=None, what=None,
                 within=None, reply_wait=REPLY_WAIT):
        self.name = name
        self.faults = list(faults)
        self.script = script
        self.expect = expect or {}
        self.deliver = deliver
        self.no_auth = no_auth
        self.pre = pre
        self.post = post
        self.check = check
        self.within = within        # (label, lo, hi): seconds to that reply
        self.reply_wait = reply_wait
        self.what = what or (", ".join(self.faults) if self.faults else "")


# ---------------------------------------------------------------- client scripts

def s_drop_mid_command(tc, run, msg):
    """Half a command line, then the client goes away."""
    run.greet()
    run.send(b"MAIL FROM:<half-a-li")
    time.sleep(0.2)
    run.close()


def s_drop_mid_command_in_tx(tc, run, msg):
    run.greet()
    run.cmd("MAIL", "MAIL FROM:<s@example.test>")
    run.cmd("RCPT", "RCPT TO:<r@example.test>")
    run.send(b"DA")
    time.sleep(0.3)
    run.close()


def s_drop_mid_data(tc, run, msg):
    run.greet()
    run.cmd("MAIL", "MAIL FROM:<s@example.test>")
    run.cmd("RCPT", "RCPT TO:<r@example.test>")
    if run.cmd("DATA", "DATA") is None:
        return
    wire = stuff(msg)
    run.send(wire[:len(wire) // 2])
    time.sleep(0.5)
    run.close()


def s_no_final_dot(tc, run, msg):
    run.greet()
    run.cmd("MAIL", "MAIL FROM:<s@example.test>")
    run.cmd("RCPT", "RCPT TO:<r@example.test>")
    if run.cmd("DATA", "DATA") is None:
        return
    run.send(stuff(msg)[:-3])           # everything but ".\r\n"
    t = time.monotonic()
    run.wait("EOD")                     # relay25's data_timeout: 421
    run.took["EOD"] = time.monotonic() - t
    run.c.wait_eof(5 * SLOW)
    run.close()


def s_random_commands(tc, run, msg):
    run.greet()
    rnd = random.Random(3)
    data = bytes(rnd.getrandbits(8) for _ in range(1024 * 1024))
    for i in range(0, len(data), 16384):
        if not run.send(data[i:i + 16384]):
            break
    run.c.wait_eof(10 * SLOW)           # 21 bad commands: 421 and closed
    run.close()


def s_5000_rcpt(tc, run, msg):
    run.greet()
    r = run.cmd("MAIL", "MAIL FROM:<s@example.test>")
    if r is None or r.code != 250:
        return
    n = 5000
    lines = b"".join(b"RCPT TO:<r%d@example.test>\r\n" % i for i in range(n))
    t = threading.Thread(target=run.send, args=(lines,), daemon=True)
    t.start()
    codes = []
    for i in range(n):
        r = run.c.reply_or_eof(REPLY_WAIT * SLOW)
        if r is None:
            break
        codes.append((r.code, r.text[:5]))
    t.join(30)
    run.steps.append(("RCPTx%d" % n, None if len(codes) < n else
                      Reply(["250 2.1.5 %d accepted" % codes.count((250, "2.1.5"))]),
                      time.monotonic() - run.t0))
    run.rcpt_codes = codes
    r = run.cmd("DATA", "DATA")
    if r is not None and r.code == 354:
        run.body(msg)
    run.quit()


def s_pipelined_garbage_tx(tc, run, msg):
    run.greet()
    batch = (b"MAIL FROM:<s@example.test>\r\nXYZZY plugh\r\n\x01\x02\x03\xff\r\n"
             b"RCPT TO:<r@example.test>\r\n" + b"G" * 5000 + b"\r\n"
             b"\x00NOOP\r\nDATA\r\n")
    run.send(batch)
    for lb in ("MAIL", "garbage1", "garbage2", "RCPT", "longline", "nul", "DATA"):
        r = run.wait(lb)
        if r is None:
            return
    if run.reply("DATA").code == 354:
        run.body(msg)
    run.quit()


def s_pipelined_garbage_flood(tc, run, msg):
    run.greet()
    run.send(b"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\n" +
             b"".join(b"BOGUS%d \x7f\x80\r\n" % i for i in range(30)) +
             b"DATA\r\n" + stuff(msg))
    for i in range(60):
        if run.wait("r%d" % i, timeout=5) is None:
            break
    run.close()


def long_lines_message(subject):
    head = make_message(subject)
    rnd = random.Random(10000)
    lines = []
    for i in range(20):
        n = 10000 if i % 2 == 0 else rnd.randint(5000, 20000)
        base = (b"%05d-" % i) + bytes(rnd.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .")
                                      for _ in range(n - 6))
        lines.append(base)
    lines.append(b"." + b"y" * 9999)          # a dot-led long line (stuffed)
    return head + b"\r\n".join(lines) + b"\r\n"


def random_8bit_message(subject, size=1024 * 1024):
    """size bytes of random 8-bit lines (every byte value but CR, LF, NUL),
    of random lengths up to 10000, some dot-led."""
    rnd = random.Random(42)
    alphabet = bytes(b for b in range(256) if b not in (0, 10, 13))
    out = [make_message(subject, extra_headers=("Content-Transfer-Encoding: 8bit",))]
    n = len(out[0])
    while n < size:
        k = rnd.randint(0, 10000)
        line = bytes(rnd.choice(alphabet) for _ in range(k))
        if rnd.random() < 0.02:
            line = b"." + line
        out.append(line + b"\r\n")
        n += len(line) + 2
    return b"".join(out)


# ---------------------------------------------------------------- the test

class FaultMatrix(RelayTestCase):

    def reload_to(self, relay, port):
        """Point relay25's upstream at port (SIGHUP) and wait for the reload."""
        text = re.sub(r"(?m)^port = \d+$", "port = %d" % port, relay.config.read_text())
        before = relay.log_text().count("configuration reloaded")
        relay.config.write_text(text)
        os.kill(relay.proc.pid, 1)      # SIGHUP
        wait_for(lambda: relay.log_text().count("configuration reloaded") > before,
                 10 * SLOW, "relay25 to reload")

    def next_session(self, relay, esp, idx):
        """One normal message through the same relay25: (ok, detail)."""
        msg = make_message("next session after cell %d" % idx,
                           body_lines=["after cell %d" % idx])
        n0 = len(esp.messages())
        try:
            s = smtplib.SMTP("127.0.0.1", relay.port, local_hostname=CLIENT_NAME,
                             timeout=20 * SLOW)
            try:
                s.sendmail("s@example.test", ["next@example.test"], msg)
            finally:
                try:
                    s.quit()
                except Exception:
                    s.close()
        except Exception as e:
            return False, "next session failed: %r" % (e,)
        try:
            ms = esp.wait_messages(n0 + 1, timeout=5)
        except AssertionError as e:
            return False, str(e)
        new = ms[n0:]
        if len(new) != 1 or new[0].data != msg:
            return False, "next message stored %d time(s) / not byte-exact" % len(new)
        return True, ""

    def run_cell(self, idx, cell, relay, esp):
        """Run one cell; returns a row dict with 'problems'."""
        problems = []
        msg = cell.msg if hasattr(cell, "msg") else make_message(
            "cell %d %s" % (idx, cell.name), body_lines=["cell %d" % idx, ".dot-led",
                                                         "end"])
        n0 = len(esp.messages())
        auth0 = len(esp.auth_log())
        if cell.pre:
            cell.pre()
        esp.set_faults(cell.faults)
        run = Run(relay.port, cell.reply_wait)
        try:
            if cell.script:
                cell.script(self, run, msg)
            else:
                if run.greet():
                    run.transaction(msg)
                run.quit()
        except Exception as e:      # a script bug or an unexpected close
            problems.append("client script: %r" % (e,))
            run.close()
        # let anything the cell started upstream finish: relay25 closes a
        # failed upstream at once; a stalled one ends by relay25's timeout
        time.sleep(0.3)
        esp.set_faults([])
        if cell.post:
            cell.post()
        stored_cell = esp.messages()[n0:]
        auth_cell = esp.auth_log()[auth0:]

        # own expectation
        for label, spec in cell.expect.items():
            r = run.reply(label)
            if not code_matches(r, spec):
                problems.append("expected %s -> %s, got %s" % (
                    label, spec, r.lines if r else "no reply/EOF"))
        if cell.within:
            label, lo, hi = cell.within
            t = run.elapsed(label)
            if t is None or not lo <= t <= hi * SLOW:
                problems.append("reply to %s after %s s, expected %.1f-%.1f s" % (
                    label, "%.1f" % t if t is not None else "never", lo, hi * SLOW))
        # the client never got 250 for a message the ESP did not store
        all_replies = parse_replies(bytes(run.c.transcript))
        qids = [m.group(1) for rep in all_replies for l in rep
                for m in [re.search(r"queued as (\S+)", l)] if m and l.startswith("250")]
        stored_qids = {m.meta.get("queue_id") for m in stored_cell}
        for q in qids:
            if q not in stored_qids:
                problems.append("client got 250 queued as %s, ESP has no such message" % q)
        eod250 = [r for lb, r, _t in run.steps if lb == "EOD" and r is not None and r.code == 250]
        # nothing partial or duplicated at the ESP
        sent = {sha(m) for m in run.sent}
        seen = {}
        for m in stored_cell:
            h = sha(m.data)
            if m.meta.get("sha256") and m.meta["sha256"] != h:
                problems.append("ESP meta sha256 differs from stored bytes (%s)" % m.path)
            if h not in sent:
                problems.append("ESP stored a message the client never completed: "
                                "%d bytes (%s)" % (len(m.data), m.path))
            seen[h] = seen.get(h, 0) + 1
            if seen[h] > 1:
                problems.append("ESP stored the same message %d times" % seen[h])
        if cell.deliver is True:
            if len(stored_cell) != 1 or len(eod250) != 1:
                problems.append("expected delivery: ESP stored %d, client got %d x 250 at EOD"
                                % (len(stored_cell), len(eod250)))
        elif cell.deliver == "esp-accepted":
            if len(stored_cell) > 1:
                problems.append("ESP stored %d copies" % len(stored_cell))
        else:
            if stored_cell:
                problems.append("expected nothing delivered, ESP stored %d" % len(stored_cell))
        if len(stored_cell) < len(eod250):
            problems.append("client got %d x 250 at EOD, ESP stored %d" % (
                len(eod250), len(stored_cell)))
        if cell.no_auth and auth_cell:
            problems.append("AUTH reached an ESP whose certificate is bad: %r" % auth_cell)
        if cell.check:
            p = cell.check(self, run, esp, stored_cell)
            if p:
                problems.append(p)
        # the same relay25 serves the next normal session
        if relay.proc.alive():
            ok, why = self.next_session(relay, esp, idx)
        else:
            ok, why = False, "relay25 exited (code %s)" % relay.proc.p.returncode
        if not ok:
            problems.append(why)
        stored_s = "%d" % len(stored_cell)
        if stored_cell:
            stored_s += " (intact)" if all(sha(m.data) in sent for m in stored_cell) \
                else " (NOT what was sent)"
        return {"idx": idx, "cell": cell.name, "what": cell.what, "client": run.summary(),
                "stored": stored_s, "next": "ok" if ok else "FAIL", "problems": problems,
                "run": run}

    # ---------------------------------------------------------------- cells
    def cells(self, relay, esp, refusing):
        good_port = esp.port()
        C = Cell
        setup_fail = {"MAIL": "451 4.4.1"}
        long_msg = long_lines_message("10000-byte lines")
        rnd_msg = random_8bit_message("1 MB random 8-bit")
        big_msg = make_message("cut mid-data", size=256 * 1024)

        def with_msg(cell, m):
            cell.msg = m
            return cell

        def upstream_ended_without_dot(tc, run, esp_, stored):
            conns = [e for e in esp_.conn_log() if "DATA" in e.get("cmds", [])]
            if not conns:
                return "no upstream connection reached DATA"
            end = conns[-1]["end"]
            if end == "quit" or not end.startswith(("eof", "read-error")):
                return "upstream session ended %r (expected dropped: eof/read-error)" % end
            return None

        def rcpt_5000(tc, run, esp_, stored):
            codes = getattr(run, "rcpt_codes", [])
            if len(codes) != 5000:
                return "got %d RCPT replies of 5000" % len(codes)
            if codes[:100] != [(250, "2.1.5")] * 100 or \
                    any(c != (452, "4.5.3") for c in codes[100:]):
                return "RCPT replies not 100 x 250 then 452 4.5.3: %r" % (
                    sorted(set(codes)),)
            if stored and len(stored[0].meta["rcpt_tos"]) != 100:
                return "stored with %d recipients" % len(stored[0].meta["rcpt_tos"])
            return None

        return [
            C("baseline (no fault)", deliver=True, expect={"EOD": "250"}),
            # ---------------- connection and TLS
            C("connection refused", what="upstream port not listening",
              expect=setup_fail,
              pre=lambda: self.reload_to(relay, refusing),
              post=lambda: self.reload_to(relay, good_port)),
            C("connection reset at accept", ["refuse"], expect=setup_fail),
            C("close after banner", ["close-after-banner"], expect=setup_fail),
            C("close after EHLO", ["close-after-ehlo"], expect=setup_fail),
            C("close after EHLO over TLS", ["close-after-ehlo:2"], expect=setup_fail),
            C("TLS handshake failure", ["bad-tls"], expect=setup_fail, no_auth=True),
            C("certificate for the wrong name", ["cert:wrong"], expect=setup_fail,
              no_auth=True),
            C("untrusted certificate", ["cert:selfsigned"], expect=setup_fail,
              no_auth=True),
            C("expired certificate", ["cert:expired"], expect=setup_fail, no_auth=True),
            # ---------------- AUTH
            C("AUTH 535", ["auth-fail"], expect=setup_fail),
            C("AUTH 454", ["tempfail-auth"], expect={"MAIL": "4xx"}),
            C("close after AUTH", ["close-after-auth"], expect={"MAIL": "4xx"}),
            # ---------------- replies passed through
            C("4xx at MAIL", ["tempfail-mail"], expect={"MAIL": "451 4.3.0"}),
            C("5xx at MAIL", ["reject-mail"], expect={"MAIL": "550 5.7.1"}),
            C("4xx at RCPT", ["tempfail-rcpt"], expect={"RCPT": "451 4.3.0",
                                                        "DATA": "5xx"}),
            C("5xx at RCPT", ["reject-rcpt"], expect={"RCPT": "550 5.1.1",
                                                      "DATA": "5xx"}),
            C("4xx to DATA", ["tempfail-data-cmd"], expect={"DATA": "451 4.3.0"}),
            C("5xx to DATA", ["reject-data-cmd"], expect={"DATA": "554 5.5.1"}),
            C("4xx at end of data", ["tempfail-data"], expect={"EOD": "451 4.3.0"}),
            C("5xx at end of data", ["reject-data"], expect={"EOD": "554 5.6.0"}),
            with_msg(C("close in the middle of DATA", ["close-mid-data:8192"],
                       expect={"EOD": "451/421 4.4.2"}), big_msg),
            C("close at end of data, no reply", ["close-after-data"],
              expect={"EOD": "451/421 4.4.2"}),
            C("close at MAIL, no reply", ["close-at-mail"], expect={"MAIL": "4xx 4.4."}),
            # ---------------- stalls (command_timeout / data_timeout = 2s)
            C("stall: banner", ["stall-banner"], expect=setup_fail,
              within=("MAIL", 1.5, 4.0)),
            C("stall: EHLO", ["stall-ehlo"], expect=setup_fail,
              within=("MAIL", 1.5, 4.0)),
            C("stall: STARTTLS reply", ["stall-starttls"], expect=setup_fail,
              within=("MAIL", 1.5, 4.0)),
            C("stall: AUTH", ["stall-auth"], expect=setup_fail,
              within=("MAIL", 1.5, 4.0)),
            C("stall: MAIL", ["stall-mail"], expect={"MAIL": "451/421 4.4.2"},
              within=("MAIL", 1.5, 4.0)),
            C("stall: RCPT", ["stall-rcpt"], expect={"RCPT": "451/421 4.4.2"},
              within=("RCPT", 1.5, 4.0)),
            C("stall: DATA (no 354)", ["stall-data"], expect={"DATA": "451/421 4.4.2"},
              within=("DATA", 1.5, 4.0)),
            C("stall: end-of-data reply", ["stall-data-reply"],
              expect={"EOD": "451/421 4.4.2"}, within=("EOD", 1.5, 4.0)),
            C("slow replies 100 ms/byte, 2s timeouts", ["slow-replies:100"],
              expect={"MAIL": "451 4.4.1"}),
            # ---------------- upstream reply limits (1024 bytes, 64 lines)
            C("reply line 1025 bytes at banner", ["huge-reply:banner/line/1025"],
              expect=setup_fail),
            C("reply 65 lines at EHLO", ["huge-reply:ehlo/lines/65"], expect=setup_fail),
            C("reply 1000 lines at EHLO", ["huge-reply:ehlo/lines/1000"], expect=setup_fail),
            C("reply line 1024 bytes at MAIL (limit, ok)", ["huge-reply:mail/line/1024"],
              deliver=True, expect={"MAIL": "250", "EOD": "250"}),
            C("reply 64 lines at MAIL (limit, ok)", ["huge-reply:mail/lines/64"],
              deliver=True, expect={"MAIL": "250", "EOD": "250"}),
            C("reply line 1025 bytes at MAIL", ["huge-reply:mail/line/1025"],
              expect={"MAIL": "4xx"}),
            C("reply line 100000 bytes at MAIL", ["huge-reply:mail/line/100000"],
              expect={"MAIL": "4xx"}),
            C("reply 65 lines at RCPT", ["huge-reply:rcpt/lines/65"],
              expect={"RCPT": "4xx"}),
            C("reply line 2000 bytes at DATA (354)", ["huge-reply:data/line/2000"],
              expect={"DATA": "4xx"}),
            C("reply 100 lines at DATA (354)", ["huge-reply:data/lines/100"],
              expect={"DATA": "4xx"}),
            C("reply line 2000 bytes at end of data (ESP stored it)",
              ["huge-reply:eod/line/2000"], expect={"EOD": "4xx"},
              deliver="esp-accepted"),
            # ---------------- client-side faults
            C("client: drop mid-command", script=s_drop_mid_command,
              what="half a MAIL line, close"),
            C("client: drop mid-command in a transaction",
              script=s_drop_mid_command_in_tx, what="MAIL, RCPT, 'DA', close"),
            with_msg(C("client: drop mid-DATA", script=s_drop_mid_data,
                       what="half of a 256 KiB body, close",
                       check=upstream_ended_without_dot), big_msg),
            C("client: never sends the final dot", script=s_no_final_dot,
              what="body without '.', wait", expect={"EOD": "421 4.4.2"},
              within=("EOD", 1.5, 4.0),
              check=upstream_ended_without_dot),
            with_msg(C("client: 10000-byte lines in DATA", deliver=True,
                       expect={"EOD": "250"}, what="20 lines of 5000-20000 bytes"),
                     long_msg),
            with_msg(C("client: 1 MB random 8-bit body", deliver=True,
                       expect={"EOD": "250"}, what="bytes 1-255 but CR LF, CRLF lines"),
                     rnd_msg),
            C("client: 1 MB random bytes as commands", script=s_random_commands,
              what="1 MiB os-random after EHLO"),
            C("client: 5000 RCPT", script=s_5000_rcpt, deliver=True,
              expect={"EOD": "250"}, check=rcpt_5000, what="pipelined"),
            C("client: pipelined garbage in a transaction", script=s_pipelined_garbage_tx,
              deliver=True, expect={"MAIL": "250", "garbage1": "500", "garbage2": "500",
                                    "RCPT": "250", "longline": "500",
                                    "nul": "500", "DATA": "354", "EOD": "250"},
              what="MAIL, junk, RCPT, 5000-byte line, NUL, DATA in one write"),
            C("client: 30 pipelined bad commands", script=s_pipelined_garbage_flood,
              what="MAIL, RCPT, 30 junk lines, DATA, body in one write",
              check=lambda tc, run, e, st: None if any(
                  r is not None and r.code == 421 and r.text.startswith("4.7.0")
                  for _l, r, _t in run.steps) else "no 421 4.7.0 after 20 bad commands"),
        ]

    def slow_group(self):
        """Every ESP reply one byte per 100 ms with generous timeouts: the
        message must be delivered. Own ESP and relay25; run in a thread."""
        esp = self.start_esp(name="esp-slow")
        relay = self.start_relay(upstream_for(esp, connect_timeout="10s"),
                                 server={"command_timeout": "60s", "data_timeout": "60s"})
        cell = Cell("slow replies 100 ms/byte, 60s timeouts", ["slow-replies:100"],
                    deliver=True, expect={"EOD": "250"}, reply_wait=90)
        out = {}

        def go():
            try:
                out["row"] = self.run_cell(900, cell, relay, esp)
            except Exception as e:
                out["error"] = repr(e)
        t = threading.Thread(target=go, daemon=True)
        t.start()
        return t, out

    def test_fault_matrix(self):
        t_start = time.monotonic()
        esp = self.start_esp(name="esp-main")
        refusing = self.refusing_port()
        relay = self.start_relay(upstream_for(esp, connect_timeout="2s"), server=dict(SHORT))
        # let the start-up probe finish before faults are switched on
        wait_for(lambda: "probe upstream" in relay.log_text(), 10 * SLOW, "the probe")
        slow_t, slow_out = self.slow_group()
        rows = []
        for i, cell in enumerate(self.cells(relay, esp, refusing), 1):
            rows.append(self.run_cell(i, cell, relay, esp))
            if not relay.proc.alive():
                break
        slow_t.join(240 * SLOW)
        if "row" in slow_out:
            rows.append(slow_out["row"])
        else:
            rows.append({"idx": 900, "cell": "slow replies 100 ms/byte, 60s timeouts",
                         "what": "slow-replies:100", "client": "-", "stored": "-",
                         "next": "FAIL", "problems": [slow_out.get("error", "did not finish")]})
        table = self.table(rows, time.monotonic() - t_start)
        for line in table.splitlines():
            self.note(line)
        try:
            NOTES_DIR.mkdir(parents=True, exist_ok=True)
            (NOTES_DIR / ("fault-matrix%s.md" % ("-san" if SANITIZE else ""))).write_text(table)
        except OSError as e:
            self.note("could not write %s: %s" % (NOTES_DIR, e))
        bad = [r for r in rows if r["problems"]]
        self.assertFalse(bad, "%d of %d cells failed:\n%s" % (
            len(bad), len(rows), "\n".join("  %s: %s" % (r["cell"], "; ".join(r["problems"]))
                                            for r in bad)))

    @staticmethod
    def table(rows, seconds):
        out = ["# relay25 fault matrix (%s, %.0fs)" % (
            "build-san" if SANITIZE else "build", seconds), "",
            "| # | cell | fault / client action | client saw | ESP stored "
            "| next session | result |",
            "|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                r["idx"], r["cell"], r["what"].replace("|", "/"),
                r["client"].replace("|", "/"), r["stored"], r["next"],
                "ok" if not r["problems"] else "**FAIL**: " +
                "; ".join(r["problems"]).replace("|", "/")))
        return "\n".join(out) + "\n"
