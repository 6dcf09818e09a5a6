#!/usr/bin/python3
"""esp.py - the test ESP: an SMTP submission server with TLS, AUTH and fault
injection, written by hand on asyncio streams so that any step can fail on
purpose.

Listeners (0 = a free port, reported in --ready-file):
  --starttls-port N   plain SMTP offering STARTTLS; TLS is required before
                      MAIL, AUTH is offered only after STARTTLS
  --implicit-port N   TLS from the first byte (port 465 style)
  --plain-port N      no TLS at all; no AUTH unless --plain-auth

Every accepted message is stored atomically in --dir as NNNN.eml (the bytes
as received, after un-dot-stuffing) and then NNNN.json (the envelope; its
presence means the message is complete):
  {"id", "queue_id", "mail_from", "mail_options", "rcpt_tos", "rcpt_options",
   "auth_user", "tls_version", "kind", "conn", "helo", "size", "sha256",
   "bare_lf", "bare_cr", "nul"}
and the reply is "250 2.0.0 Ok: queued as <queue_id>".
With --discard nothing is written (no messages, no logs): messages are only
counted; SIGUSR1 prints the count on stderr and writes it to DIR/count
(for benchmarks).

Audit logs in --dir (one JSON object per line):
  auth.log  one line per AUTH attempt {"user", "tls", "ok", "mech", "conn"};
            a line {"leak": true, "tls": false, ...} if the password was seen
            in any command line received without TLS.
  conn.log  one line per connection when it ends {"conn", "kind", "tls_version",
            "tls_resumed",
            "cmds" (AUTH arguments redacted), "end", "msgs", "auth_user",
            "plaintext_after_starttls"}.

Faults (--fault NAME[:ARG][@N], repeatable; @N: only the first N connections
that reach the fault's check). A file DIR/faults, if present when a
connection is accepted, replaces the command-line faults (one spec a line).
  refuse              ports are bound but not listening (connection refused)
  bad-tls             garbage instead of a TLS handshake (implicit: at once;
                      STARTTLS: after the 220)
  stall-banner        never send the banner
  delay-banner:SECS   send the banner after SECS seconds
  close-after-banner  close right after the banner
  close-after-ehlo[:K]  close after the K-th EHLO reply (default 1)
  stall-ehlo          never answer EHLO
  auth-fail           AUTH always 535 5.7.8
  tempfail-auth       AUTH always 454 4.7.0
  tempfail-mail       MAIL gets 451 4.3.0
  reject-mail         MAIL gets 550 5.7.1
  tempfail-rcpt       every RCPT gets 451 4.3.0
  close-mid-data[:B]  close after B body bytes (default 1024)
  slow-data:BPS       read the body at about BPS bytes per second
  reject-data         554 5.6.0 after the end of data (nothing stored)
  tempfail-data       451 4.3.0 after the end of data (nothing stored)
  stall-data-reply    never answer the end of data (nothing stored)
  close-after-data    close at the end of data without a reply (nothing stored)
  max-msgs:N          421 4.7.0 and close at the MAIL after N messages
  close-after-auth    close right after a successful AUTH reply
  close-at-mail       close when MAIL arrives, without a reply (a pooled
                      session that died unnoticed)
  close-at-noop       close when NOOP arrives, without a reply
  stall-starttls      never answer STARTTLS
  stall-auth          never answer AUTH
  stall-mail          never answer MAIL
  stall-rcpt          never answer RCPT
  stall-data          never answer the DATA command (no 354)
  reject-rcpt         every RCPT gets 550 5.1.1
  tempfail-data-cmd   the DATA command gets 451 4.3.0 (no 354)
  reject-data-cmd     the DATA command gets 554 5.5.1 (no 354)
  slow-replies:MS     write every reply one byte at a time, MS milliseconds
                      apart (default 100)
  huge-reply:STAGE[/KIND[/N]]
                      an oversized reply at STAGE (banner, ehlo, mail, rcpt,
                      data = the 354, eod = the 250 after the message, which
                      is stored as usual). KIND line (default): the first
                      line padded to N bytes without CRLF (default 2000);
                      KIND lines: the reply made N lines long (default 100).
                      The code is the one the reply would have had.
  cert:NAME           use NAME.pem/NAME.key (next to --cert) for this
                      connection's TLS (implicit or STARTTLS), e.g. wrong,
                      selfsigned, expired
  reject-token        the OAuth token presented (XOAUTH2 / OAUTHBEARER) is
                      refused even if valid: a stale token (@1: the first)

AUTH mechanisms: PLAIN and LOGIN with --user/--password; CRAM-MD5 (RFC
2195) too with --cram-md5; XOAUTH2 and OAUTHBEARER (RFC 7628) with
--oauth-token TOKEN (repeatable: the tokens accepted for --user;
--reject-first-token = --fault reject-token@1). A refused token gets the
error challenge "334 <base64 JSON>"; the client must answer an empty line
(XOAUTH2) or "AQ==" (OAUTHBEARER), then gets 535 (anything else: 501, and
"bad_ack" in auth.log). auth.log lines of the token mechanisms carry "host"
and "port" (OAUTHBEARER) and "token_ok". --mechs "CRAM-MD5 ..." replaces the
AUTH mechanisms advertised (and accepted).
"""

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import time

READ_LIMIT = 65536          # StreamReader buffer limit (longest piece read)
CMD_MAX = 4096              # longest command line accepted (with CRLF)
MAX_RCPTS = 1000
MAX_BAD_CMDS = 50
MAX_CMD_LOG = 2000

FAULTS = {
    "refuse", "bad-tls", "stall-banner", "delay-banner", "close-after-banner",
    "close-after-ehlo", "stall-ehlo", "auth-fail", "tempfail-auth",
    "tempfail-mail", "reject-mail", "tempfail-rcpt", "close-mid-data",
    "slow-data", "reject-data", "tempfail-data", "stall-data-reply",
    "close-after-data", "max-msgs", "close-after-auth", "close-at-mail",
    "close-at-noop", "stall-starttls", "stall-auth", "stall-mail",
    "stall-rcpt", "stall-data", "reject-rcpt", "tempfail-data-cmd",
    "reject-data-cmd", "slow-replies", "huge-reply", "cert", "reject-token",
}
HUGE_STAGES = ("banner", "ehlo", "mail", "rcpt", "data", "eod")


def parse_huge(arg):
    """'STAGE[/KIND[/N]]' -> (stage, kind, n). ValueError if bad."""
    parts = (arg or "").split("/")
    stage = parts[0]
    kind = parts[1] if len(parts) > 1 else "line"
    if stage not in HUGE_STAGES or kind not in ("line", "lines") or len(parts) > 3:
        raise ValueError("huge-reply:STAGE[/line|lines[/N]], STAGE one of %s"
                         % ", ".join(HUGE_STAGES))
    n = int(parts[2]) if len(parts) > 2 else (2000 if kind == "line" else 100)
    if n < (5 if kind == "line" else 1):
        raise ValueError("huge-reply: N too small")
    return stage, kind, n


class Closed(Exception):
    """The session ends (peer gone, fault, timeout); .reason says why."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def parse_fault(spec):
    """'NAME[:ARG][@N]' -> (name, arg or None, n or None). ValueError if bad."""
    spec = spec.strip()
    limit = None
    if "@" in spec:
        spec, n = spec.rsplit("@", 1)
        limit = int(n)
        if limit < 0:
            raise ValueError("negative @N")
    name, _, arg = spec.partition(":")
    if name not in FAULTS:
        raise ValueError("unknown fault %r" % name)
    if name == "huge-reply":
        parse_huge(arg)
    if name == "cert" and not re.fullmatch(r"[A-Za-z0-9_-]+", arg or ""):
        raise ValueError("cert:NAME needs a plain file name")
    if name == "slow-replies" and arg is not None and float(arg) < 0:
        raise ValueError("slow-replies: negative delay")
    return name, (arg if arg != "" else None), limit


class FaultSet:
    """The faults active for one connection. `take(name)` answers whether the
    fault fires now (consuming one use of an @N budget) and returns its ARG."""

    def __init__(self, server, specs):
        self.server = server
        self.specs = specs          # list of (key, name, arg, limit)

    def has(self, name):
        return any(s[1] == name for s in self.specs)

    def take(self, name):
        """(True, arg) if fault NAME fires for this check, else (False, None)."""
        for key, fname, arg, limit in self.specs:
            if fname != name:
                continue
            if limit is not None:
                used = self.server.fault_uses.get(key, 0)
                if used >= limit:
                    continue
                self.server.fault_uses[key] = used + 1
            return True, arg
        return False, None


def b64decode_strict(s):
    if s == "=":
        return b""
    return base64.b64decode(s.encode("ascii"), validate=True)


def parse_path(rest):
    """'<addr> PARAM PARAM' (after 'FROM:'/'TO:') -> (addr, [params]) or None."""
    rest = rest.lstrip(" ")
    if not rest.startswith("<"):
        return None
    end = rest.find(">")
    if end < 0:
        return None
    addr = rest[1:end]
    tail = rest[end + 1:]
    if tail and not tail.startswith(" "):
        return None
    params = tail.split()
    if any(c in addr for c in " <>"):
        return None
    return addr, params


def parse_token_response(mech, raw):
    """The XOAUTH2 or OAUTHBEARER initial response -> (user, token, extra)
    as bytes (extra: {"host", "port"} for OAUTHBEARER), or None if
    malformed."""
    if not raw.endswith(b"\x01\x01"):
        return None
    if mech == "XOAUTH2":
        fields = raw[:-2].split(b"\x01")
        if len(fields) != 2 or not fields[0].startswith(b"user=") or \
                not fields[1].startswith(b"auth=Bearer "):
            return None
        return fields[0][5:], fields[1][12:], {}
    # OAUTHBEARER: gs2-header "n,a=SASLNAME," then kvpairs
    m = re.fullmatch(rb"n,a=([^,]*),\x01(.*)", raw[:-2], re.S)
    if m is None:
        return None
    user = m.group(1).replace(b"=2C", b",").replace(b"=3D", b"=")
    kv = {}
    for pair in m.group(2).split(b"\x01"):
        k, eq, v = pair.partition(b"=")
        if not eq or k in kv:
            return None
        kv[k] = v
    auth = kv.get(b"auth", b"")
    if not auth.startswith(b"Bearer ") or b"host" not in kv or b"port" not in kv:
        return None
    return user, auth[7:], {"host": kv[b"host"].decode("utf-8", "replace"),
                            "port": kv[b"port"].decode("utf-8", "replace")}


class Session:
    """One client connection: the SMTP server state machine."""

    def __init__(self, server, reader, writer, kind, conn_id, faults, peer):
        self.srv = server
        self.reader = reader
        self.writer = writer
        self.kind = kind
        self.conn = conn_id
        self.faults = faults
        self.peer = peer
        self.tls_version = None
        self.tls_resumed = False
        if kind == "implicit":
            sslobj = writer.get_extra_info("ssl_object")
            self.tls_version = sslobj.version() if sslobj else None
            self.tls_resumed = bool(sslobj and sslobj.session_reused)
        self.helo = None
        self.ehlo_count = 0
        self.auth_user = None
        self.msgs = 0
        self.bad = 0
        self.cmds = []
        self.plain_after_starttls = 0
        self.rbuf = bytearray()     # bytes read from the peer, not yet used
        fire, arg = faults.take("slow-replies")
        self.slow = float(arg or 100) / 1000.0 if fire else None
        fire, arg = faults.take("huge-reply")
        self.huge = parse_huge(arg) if fire else None
        self.reset_tx()

    # ------------------------------------------------------------ helpers
    @property
    def tls(self):
        return self.tls_version is not None

    def reset_tx(self):
        self.mail_from = None
        self.mail_options = []
        self.rcpts = []
        self.rcpt_options = []

    def log(self, msg):
        if self.srv.verbose:
            sys.stderr.write("esp[%d %s] %s\n" % (self.conn, self.kind, msg))
            sys.stderr.flush()

    def note_cmd(self, text):
        if len(self.cmds) < MAX_CMD_LOG:
            self.cmds.append(text)

    def huge_lines(self, stage, lines):
        """The reply lines, made oversized if huge-reply fires at STAGE."""
        if self.huge is None or self.huge[0] != stage:
            return lines
        _stage, kind, n = self.huge
        self.huge = None            # once per connection
        code = lines[-1][:3]
        if kind == "line":
            first = lines[0]
            first += " " + "x" * max(0, n - len(first) - 1)
            lines = [first[:max(n, len(lines[0]))]] + list(lines[1:])
            self.log("huge reply: first line %d bytes" % len(lines[0]))
            return lines
        body = [l[4:] for l in lines]
        filler = []
        while len(body) + len(filler) < n:
            filler.append("X-FILLER-%d" % len(filler))
        body = body[:1] + filler + body[1:]     # the last line stays last
        self.log("huge reply: %d lines" % len(body))
        return ["%s-%s" % (code, t) for t in body[:-1]] + ["%s %s" % (code, body[-1])]

    async def reply(self, *lines):
        """Send one (possibly multi-line) reply: reply('250-a', '250 b')."""
        data = "".join(l + "\r\n" for l in lines).encode("utf-8", "replace")
        for l in lines:
            self.log("S: " + (l if len(l) <= 200 else l[:200] + "...(%d)" % len(l)))
        try:
            if self.slow is not None:
                for i in range(len(data)):
                    self.writer.write(data[i:i + 1])
                    await asyncio.wait_for(self.writer.drain(), self.srv.timeout)
                    await asyncio.sleep(self.slow)
            else:
                self.writer.write(data)
                await asyncio.wait_for(self.writer.drain(), self.srv.timeout)
        except (ConnectionError, asyncio.TimeoutError, OSError) as e:
            raise Closed("write-failed: %s" % type(e).__name__)

    async def fill(self, n=65536):
        """Read more bytes from the peer into self.rbuf."""
        try:
            data = await asyncio.wait_for(self.reader.read(n), self.srv.timeout)
        except asyncio.TimeoutError:
            raise Closed("timeout")
        except (ConnectionError, OSError, ssl.SSLError) as e:
            raise Closed("read-error: %s" % type(e).__name__)
        if not data:
            raise Closed("eof-partial-line" if self.rbuf else "eof")
        self.rbuf += data

    async def read_piece(self):
        """Up to and including the next LF, or READ_LIMIT bytes without one."""
        start = 0
        while True:
            nl = self.rbuf.find(b"\n", start)
            if nl >= 0 or len(self.rbuf) >= READ_LIMIT:
                n = nl + 1 if 0 <= nl < READ_LIMIT else READ_LIMIT
                piece = bytes(self.rbuf[:n])
                del self.rbuf[:n]
                return piece
            start = len(self.rbuf)
            await self.fill()

    async def read_line(self):
        """A command line without its line end; None if it was too long."""
        line = await self.read_piece()
        if not line.endswith(b"\n") or len(line) > CMD_MAX:
            while not line.endswith(b"\n"):     # discard the rest
                line = await self.read_piece()
            return None
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not self.tls:
            self.check_leak(line)
        return line

    def check_leak(self, line):
        """Record if the password or an OAuth token is visible in a line
        read without TLS."""
        seen = False
        for pw in [self.srv.password] + sorted(self.srv.oauth_tokens):
            if not pw:
                continue
            pwb = pw.encode()
            seen = pwb in line
            if not seen:
                for tok in line.split():
                    try:
                        if pwb in base64.b64decode(tok + b"==", validate=False):
                            seen = True
                            break
                    except (binascii.Error, ValueError):
                        pass
            if seen:
                break
        if seen:
            self.srv.auth_log({"user": None, "tls": False, "ok": False,
                               "leak": True, "conn": self.conn})

    async def hold(self, reason):
        """Keep the connection open, answering nothing, until the peer goes
        away or --stall-time passes."""
        deadline = time.monotonic() + self.srv.stall_time
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(self.reader.read(65536),
                                              max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            except (ConnectionError, OSError, ssl.SSLError):
                break
            if not data:
                break
        raise Closed(reason)

    # ------------------------------------------------------------ main loop
    async def run(self):
        end = "?"
        try:
            await self.serve()
            end = "quit"
        except Closed as e:
            end = e.reason
        except asyncio.CancelledError:
            end = "cancelled"
            raise
        except Exception as e:  # a bug here must not take the server down
            end = "internal-error: %r" % e
            sys.stderr.write("esp: INTERNAL ERROR conn %d: %r\n" % (self.conn, e))
            import traceback
            traceback.print_exc()
        finally:
            self.log("end: " + end)
            self.srv.conn_log({
                "conn": self.conn, "kind": self.kind, "peer": self.peer,
                "tls_version": self.tls_version, "tls_resumed": self.tls_resumed,
                "cmds": self.cmds,
                "end": end, "msgs": self.msgs, "auth_user": self.auth_user,
                "plaintext_after_starttls": self.plain_after_starttls})
            try:
                self.writer.close()
            except Exception:
                pass

    async def serve(self):
        fire, arg = self.faults.take("delay-banner")
        if fire:
            await asyncio.sleep(float(arg or 1))
        if self.faults.take("stall-banner")[0]:
            await self.hold("fault:stall-banner")
        await self.reply(*self.huge_lines(
            "banner", ["220 %s ESMTP test-esp" % self.srv.hostname]))
        if self.faults.take("close-after-banner")[0]:
            raise Closed("fault:close-after-banner")
        while True:
            line = await self.read_line()
            if line is None:
                self.note_cmd("<too long>")
                await self.reply("500 5.5.2 Line too long")
                await self.count_bad()
                continue
            text = line.decode("utf-8", "replace")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb == "AUTH":
                self.note_cmd("AUTH " + arg.split(" ")[0] + " ****"
                              if " " in arg else text)
                self.log("C: " + self.cmds[-1] if self.cmds else "C: AUTH")
            else:
                self.note_cmd(text)
                self.log("C: " + text)
            handler = getattr(self, "cmd_" + verb.lower(), None) \
                if verb.isalpha() else None
            if handler is None:
                await self.reply("500 5.5.1 Command unrecognized")
                await self.count_bad()
                continue
            if await handler(arg) == "quit":
                return

    async def count_bad(self):
        self.bad += 1
        if self.bad >= MAX_BAD_CMDS:
            await self.reply("421 4.7.0 Too many errors")
            raise Closed("too-many-errors")

    # ------------------------------------------------------------ commands
    def auth_offered(self):
        if self.srv.user is None:
            return False
        return self.tls or (self.kind == "plain" and self.srv.plain_auth)

    def auth_required(self):
        if self.srv.user is None:
            return False
        return self.kind in ("starttls", "implicit") or self.srv.plain_auth

    async def cmd_ehlo(self, arg):
        if not arg.strip():
            return await self.reply("501 5.5.4 EHLO requires a domain")
        self.ehlo_count += 1
        if self.faults.take("stall-ehlo")[0]:
            await self.hold("fault:stall-ehlo")
        self.helo = arg.strip()
        self.reset_tx()
        ext = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES",
               "SIZE %d" % self.srv.max_size if self.srv.max_size else "SIZE"]
        if self.srv.smtputf8:
            ext.append("SMTPUTF8")
        if self.srv.dsn:
            ext.append("DSN")
        if self.kind == "starttls" and not self.tls:
            ext.append("STARTTLS")
        if self.auth_offered() and not self.auth_user:
            ext.append("AUTH " + " ".join(self.srv.mechs))
        ext.extend(self.srv.advertise)
        lines = ["250-%s greets %s" % (self.srv.hostname, self.helo)]
        lines += ["250-" + e for e in ext[:-1]] + ["250 " + ext[-1]]
        await self.reply(*self.huge_lines("ehlo", lines))
        fire, k = self.faults.take("close-after-ehlo") \
            if self.faults.has("close-after-ehlo") else (False, None)
        if fire:
            if self.ehlo_count >= int(k or 1):
                raise Closed("fault:close-after-ehlo")
            # not this EHLO yet: give the use back
            self.refund("close-after-ehlo")

    def refund(self, name):
        for key, fname, _arg, limit in self.faults.specs:
            if fname == name and limit is not None:
                self.srv.fault_uses[key] = max(0, self.srv.fault_uses.get(key, 1) - 1)
                return

    async def cmd_helo(self, arg):
        if not arg.strip():
            return await self.reply("501 5.5.4 HELO requires a domain")
        self.helo = arg.strip()
        self.reset_tx()
        await self.reply("250 %s" % self.srv.hostname)

    async def cmd_starttls(self, arg):
        if self.kind != "starttls":
            return await self.reply("502 5.5.1 STARTTLS not available")
        if self.tls:
            return await self.reply("503 5.5.1 TLS already active")
        if arg.strip():
            return await self.reply("501 5.5.4 No parameters allowed")
        if self.faults.take("stall-starttls")[0]:
            await self.hold("fault:stall-starttls")
        # Stop reading before the 220 so the ClientHello stays in the socket
        # for the TLS layer. Plaintext the client pipelined after STARTTLS
        # must never be executed inside the TLS session (CVE-2011-0411
        # class): record and drop what was read ahead.
        self.writer.transport.pause_reading()
        buf = getattr(self.reader, "_buffer", bytearray())
        if buf or self.rbuf:
            self.plain_after_starttls += len(buf) + len(self.rbuf)
            self.log("plaintext after STARTTLS: %d bytes dropped" %
                     (len(buf) + len(self.rbuf)))
            buf.clear()
            self.rbuf.clear()
        await self.reply("220 2.0.0 Ready to start TLS")
        if self.faults.take("bad-tls")[0]:
            self.writer.write(self.srv.garbage())
            await self.writer.drain()
            raise Closed("fault:bad-tls")
        try:
            await self.writer.start_tls(self.srv.ctx_for(self.faults),
                                        ssl_handshake_timeout=self.srv.timeout)
        except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError) as e:
            raise Closed("tls-handshake-failed: %s" % e)
        sslobj = self.writer.get_extra_info("ssl_object")
        self.tls_version = sslobj.version() if sslobj else "unknown"
        self.tls_resumed = bool(sslobj and sslobj.session_reused)
        self.log("TLS established: %s%s" % (self.tls_version,
                                             " (resumed)" if self.tls_resumed else ""))
        self.helo = None
        self.reset_tx()

    async def cmd_auth(self, arg):
        parts = arg.split()
        if not parts:
            return await self.reply("501 5.5.4 AUTH mechanism required")
        mech = parts[0].upper()
        initial = parts[1] if len(parts) > 1 else None
        if self.helo is None:
            return await self.reply("503 5.5.1 EHLO first")
        if self.faults.take("stall-auth")[0]:
            await self.hold("fault:stall-auth")
        if not self.auth_offered():
            user = None
            if initial is not None:
                try:
                    raw = b64decode_strict(initial)
                    user = (raw.split(b"\0")[1] if mech == "PLAIN" and
                            raw.count(b"\0") >= 2 else raw).decode("utf-8", "replace")
                except (binascii.Error, ValueError):
                    pass
            self.srv.auth_log({"user": user, "tls": self.tls, "ok": False,
                               "mech": mech, "conn": self.conn})
            if self.srv.user is None:
                return await self.reply("502 5.5.1 AUTH not available")
            return await self.reply("538 5.7.11 Encryption required for "
                                    "requested authentication mechanism")
        if self.auth_user is not None:
            return await self.reply("503 5.5.1 Already authenticated")
        if self.mail_from is not None:
            return await self.reply("503 5.5.1 AUTH not allowed in a transaction")
        ok = None
        extra = {}
        try:
            if mech == "PLAIN":
                if initial is None:
                    await self.reply("334 ")
                    initial = await self.auth_response()
                raw = b64decode_strict(initial)
                fields = raw.split(b"\0")
                if len(fields) != 3:
                    return await self.reply("501 5.5.2 Malformed PLAIN response")
                user, pw = fields[1], fields[2]
            elif mech == "LOGIN":
                if initial is None:
                    await self.reply("334 VXNlcm5hbWU6")
                    initial = await self.auth_response()
                user = b64decode_strict(initial)
                await self.reply("334 UGFzc3dvcmQ6")
                pw = b64decode_strict(await self.auth_response())
            elif mech == "CRAM-MD5" and mech in self.srv.mechs:
                chal = ("<%d.%d@%s>" % (secrets.randbelow(10**9), time.time(),
                                        self.srv.hostname)).encode()
                await self.reply("334 " + base64.b64encode(chal).decode())
                resp = b64decode_strict(await self.auth_response())
                user, _, digest = resp.rpartition(b" ")
                want = hmac.new(self.srv.password.encode(), chal,
                                hashlib.md5).hexdigest().encode()
                ok = (user.decode("utf-8", "replace") == self.srv.user and
                      hmac.compare_digest(digest, want))
            elif mech in ("XOAUTH2", "OAUTHBEARER") and mech in self.srv.mechs:
                if initial is None:
                    await self.reply("334 ")
                    initial = await self.auth_response()
                parsed = parse_token_response(mech, b64decode_strict(initial))
                if parsed is None:
                    self.srv.auth_log({"user": None, "tls": self.tls,
                                       "ok": False, "mech": mech,
                                       "conn": self.conn, "malformed": True})
                    return await self.reply("501 5.5.2 Malformed %s response" % mech)
                user, token, extra = parsed
                extra["token_ok"] = token.decode("utf-8", "replace") in \
                    self.srv.oauth_tokens
                ok = (user.decode("utf-8", "replace") == self.srv.user and
                      extra["token_ok"])
                if self.faults.take("reject-token")[0]:
                    ok = False
                    extra["stale"] = True
                if not ok:
                    err = json.dumps({"status": "401", "schemes": "bearer",
                                      "scope": "https://mail.google.com/"})
                    await self.reply("334 " + base64.b64encode(err.encode()).decode())
                    ack = await self.auth_response()
                    if ack != ("AQ==" if mech == "OAUTHBEARER" else ""):
                        self.srv.auth_log({"user": user.decode("utf-8", "replace"),
                                           "tls": self.tls, "ok": False,
                                           "mech": mech, "conn": self.conn,
                                           "bad_ack": True, **extra})
                        return await self.reply("501 5.5.2 Bad answer to the "
                                                "error challenge")
            else:
                return await self.reply("504 5.5.4 Unrecognized authentication type")
        except (binascii.Error, ValueError):
            return await self.reply("501 5.5.2 Invalid base64")
        except _AuthCancelled:
            return await self.reply("501 5.0.0 Authentication cancelled")
        user_s = user.decode("utf-8", "replace")
        if ok is None:
            ok = user_s == self.srv.user and pw == self.srv.password.encode()
        if self.faults.take("tempfail-auth")[0]:
            self.srv.auth_log({"user": user_s, "tls": self.tls, "ok": False,
                               "mech": mech, "conn": self.conn})
            return await self.reply("454 4.7.0 Temporary authentication failure")
        if self.faults.take("auth-fail")[0]:
            ok = False
        self.srv.auth_log({"user": user_s, "tls": self.tls, "ok": ok,
                           "mech": mech, "conn": self.conn, **extra})
        if not ok:
            return await self.reply("535 5.7.8 Authentication credentials invalid")
        self.auth_user = user_s
        await self.reply("235 2.7.0 Authentication successful")
        if self.faults.take("close-after-auth")[0]:
            raise Closed("fault:close-after-auth")

    async def auth_response(self):
        line = await self.read_line()
        if line is None:
            raise ValueError("too long")
        self.note_cmd("<auth response>")
        self.log("C: <auth response>")
        if line == b"*":
            raise _AuthCancelled()
        return line.decode("ascii", "replace")

    async def cmd_mail(self, arg):
        if self.helo is None:
            return await self.reply("503 5.5.1 EHLO/HELO first")
        if self.kind == "starttls" and not self.tls:
            return await self.reply("530 5.7.0 Must issue a STARTTLS command first")
        if self.auth_required() and self.auth_user is None:
            return await self.reply("530 5.7.0 Authentication required")
        if self.mail_from is not None:
            return await self.reply("503 5.5.1 Nested MAIL command")
        if arg[:5].upper() != "FROM:":
            return await self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
        parsed = parse_path(arg[5:])
        if parsed is None:
            return await self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
        addr, params = parsed
        utf8 = False
        for p in params:
            key, _, val = p.partition("=")
            key = key.upper()
            if key == "SIZE":
                if not val.isdigit():
                    return await self.reply("501 5.5.4 Bad SIZE parameter")
                if self.srv.max_size and int(val) > self.srv.max_size:
                    return await self.reply("552 5.3.4 Message size exceeds fixed limit")
            elif key == "BODY":
                if val.upper() not in ("7BIT", "8BITMIME"):
                    return await self.reply("501 5.5.4 Bad BODY parameter")
            elif key == "SMTPUTF8" and self.srv.smtputf8 and not val:
                utf8 = True
            elif key in ("RET", "ENVID") and self.srv.dsn:
                pass
            else:
                return await self.reply("555 5.5.4 Unsupported option: %s" % key)
        if not utf8 and not addr.isascii():
            return await self.reply("553 5.6.7 Non-ASCII address requires SMTPUTF8")
        fire, n = self.faults.take("max-msgs") \
            if self.faults.has("max-msgs") else (False, None)
        if fire:
            if self.msgs >= int(n or 1):
                await self.reply("421 4.7.0 Too many messages on this connection")
                raise Closed("fault:max-msgs")
            self.refund("max-msgs")
        if self.faults.take("close-at-mail")[0]:
            raise Closed("fault:close-at-mail")
        if self.faults.take("stall-mail")[0]:
            await self.hold("fault:stall-mail")
        if self.faults.take("tempfail-mail")[0]:
            return await self.reply("451 4.3.0 Temporary failure, try again later")
        if self.faults.take("reject-mail")[0]:
            return await self.reply("550 5.7.1 Sender rejected")
        self.mail_from = addr
        self.mail_options = params
        await self.reply(*self.huge_lines("mail", ["250 2.1.0 Ok"]))

    async def cmd_rcpt(self, arg):
        if self.mail_from is None:
            return await self.reply("503 5.5.1 MAIL first")
        if arg[:3].upper() != "TO:":
            return await self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
        parsed = parse_path(arg[3:])
        if parsed is None or not parsed[0]:
            return await self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
        addr, params = parsed
        for p in params:
            key = p.partition("=")[0].upper()
            if not (key in ("NOTIFY", "ORCPT") and self.srv.dsn):
                return await self.reply("555 5.5.4 Unsupported option: %s" % key)
        if len(self.rcpts) >= MAX_RCPTS:
            return await self.reply("452 4.5.3 Too many recipients")
        if addr.lower() in self.srv.reject_rcpt:
            return await self.reply("550 5.1.1 <%s>: Recipient address rejected: "
                                    "User unknown" % addr)
        if self.faults.take("stall-rcpt")[0]:
            await self.hold("fault:stall-rcpt")
        if self.faults.take("tempfail-rcpt")[0]:
            return await self.reply("451 4.3.0 <%s>: Temporary failure" % addr)
        if self.faults.take("reject-rcpt")[0]:
            return await self.reply("550 5.1.1 <%s>: Recipient address rejected"
                                    % addr)
        self.rcpts.append(addr)
        self.rcpt_options.append(params)
        await self.reply(*self.huge_lines("rcpt", ["250 2.1.5 Ok"]))

    async def cmd_data(self, arg):
        if arg.strip():
            return await self.reply("501 5.5.4 No parameters allowed")
        if self.mail_from is None:
            return await self.reply("503 5.5.1 MAIL first")
        if not self.rcpts:
            return await self.reply("554 5.5.1 No valid recipients")
        if self.faults.take("stall-data")[0]:
            await self.hold("fault:stall-data")
        if self.faults.take("tempfail-data-cmd")[0]:
            self.reset_tx()
            return await self.reply("451 4.3.0 Temporary failure at DATA")
        if self.faults.take("reject-data-cmd")[0]:
            self.reset_tx()
            return await self.reply("554 5.5.1 DATA rejected")
        await self.reply(*self.huge_lines(
            "data", ["354 End data with <CR><LF>.<CR><LF>"]))
        tmp = None if self.srv.discard else self.srv.tmp_path()
        try:
            with (_Discard() if tmp is None else open(tmp, "wb")) as f:
                size, digest, stats = await self.receive_body(f)
            self.log("C: <body %d bytes> ." % size)
            if self.faults.take("stall-data-reply")[0]:
                await self.hold("fault:stall-data-reply")
            if self.faults.take("close-after-data")[0]:
                raise Closed("fault:close-after-data")
            if self.faults.take("reject-data")[0]:
                return await self.reply("554 5.6.0 Message rejected")
            if self.faults.take("tempfail-data")[0]:
                return await self.reply("451 4.3.0 Temporary failure after data")
            if self.srv.max_size and size > self.srv.max_size:
                return await self.reply("552 5.3.4 Message size exceeds fixed limit")
            meta = {
                "mail_from": self.mail_from, "mail_options": self.mail_options,
                "rcpt_tos": self.rcpts, "rcpt_options": self.rcpt_options,
                "auth_user": self.auth_user, "tls_version": self.tls_version,
                "kind": self.kind, "conn": self.conn, "helo": self.helo,
                "size": size, "sha256": digest, **stats}
            if tmp is None:
                self.srv.msg_seq += 1
                qid = "D%X%04d" % (os.getpid(), self.srv.msg_seq)
            else:
                qid = self.srv.store(tmp, meta)
            tmp = None
            self.msgs += 1
            await self.reply(*self.huge_lines(
                "eod", ["250 2.0.0 Ok: queued as %s" % qid]))
        finally:
            self.reset_tx()
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    async def receive_body(self, f):
        """Read the body up to CRLF.CRLF, un-dot-stuff it into f.
        Returns (size, sha256 hex, stats)."""
        fire, arg = self.faults.take("close-mid-data")
        close_after = int(arg or 1024) if fire else None
        fire, arg = self.faults.take("slow-data")
        rate = float(arg or 10000) if fire else None
        if self.srv.eod == "lenient":
            return await self.receive_body_lines(f, close_after, rate)
        return await self.receive_body_strict(f, close_after, rate)

    async def receive_body_strict(self, f, close_after, rate):
        """RFC 5321 framing on whole chunks: the end is the first CRLF.CRLF
        (the start of data counts as after a CRLF); every other CRLF
        followed by a dot loses the dot. The bytes kept back between chunks are the longest
        tail that could begin such a sequence, so none is ever split."""
        eod = b"\r\n.\r\n"
        h = hashlib.sha256()
        stats = {"bare_lf": 0, "bare_cr": 0, "nul": 0}
        size = 0
        raw = 0
        buf = bytearray(b"\r\n")    # sentinel: data starts after a CRLF
        skip = 2                    # sentinel bytes still to drop from output
        scan_from = 0

        def emit(chunk):
            nonlocal skip, size
            out = bytes(chunk).replace(b"\r\n.", b"\r\n")
            if skip:
                out = out[skip:]
                skip = 0
            crlf = out.count(b"\r\n")
            stats["bare_lf"] += out.count(b"\n") - crlf
            stats["bare_cr"] += out.count(b"\r") - crlf
            stats["nul"] += out.count(b"\0")
            f.write(out)
            h.update(out)
            size += len(out)

        while True:
            e = buf.find(eod, scan_from)
            if e >= 0:
                emit(buf[:e + 2])
                self.rbuf[0:0] = buf[e + 5:]    # pipelined commands after it
                return size, h.hexdigest(), stats
            keep = 0
            for k in (4, 3, 2, 1):
                if len(buf) >= k and buf.endswith(eod[:k]):
                    keep = k
                    break
            if len(buf) - keep > 0:
                emit(buf[:len(buf) - keep])
                del buf[:len(buf) - keep]
            scan_from = 0
            if self.rbuf:
                data = bytes(self.rbuf)
                self.rbuf.clear()
            else:
                await self.fill(min(65536, int(rate / 10) + 1) if rate else 65536)
                data = bytes(self.rbuf)
                self.rbuf.clear()
            raw += len(data)
            if close_after is not None and raw >= close_after:
                raise Closed("fault:close-mid-data")
            if rate:
                await asyncio.sleep(len(data) / rate)
            scan_from = max(0, len(buf) - 4)
            buf += data

    async def receive_body_lines(self, f, close_after, rate):
        """Lenient framing, line by line: LF.LF, LF.CRLF and CRLF.LF end the
        data too (as smuggling-prone servers do)."""
        h = hashlib.sha256()
        size = raw = 0
        at_start = True
        stats = {"bare_lf": 0, "bare_cr": 0, "nul": 0}
        while True:
            piece = await self.read_piece()
            raw += len(piece)
            if close_after is not None and raw >= close_after:
                raise Closed("fault:close-mid-data")
            if rate:
                await asyncio.sleep(len(piece) / rate)
            if at_start:
                if piece in (b".\n", b".\r\n"):
                    return size, h.hexdigest(), stats
                if piece[:1] == b".":
                    piece = piece[1:]
            crlf = piece.count(b"\r\n")
            stats["bare_lf"] += piece.count(b"\n") - crlf
            stats["bare_cr"] += piece.count(b"\r") - crlf
            stats["nul"] += piece.count(b"\0")
            at_start = piece.endswith(b"\n")
            f.write(piece)
            h.update(piece)
            size += len(piece)

    async def cmd_rset(self, arg):
        self.reset_tx()
        await self.reply("250 2.0.0 Ok")

    async def cmd_noop(self, arg):
        if self.faults.take("close-at-noop")[0]:
            raise Closed("fault:close-at-noop")
        await self.reply("250 2.0.0 Ok")

    async def cmd_vrfy(self, arg):
        await self.reply("252 2.5.2 Cannot VRFY user")

    async def cmd_help(self, arg):
        await self.reply("214 2.0.0 See RFC 5321")

    async def cmd_quit(self, arg):
        await self.reply("221 2.0.0 Bye")
        return "quit"


class _AuthCancelled(Exception):
    pass


class _Discard:
    """A file that forgets what is written to it (--discard)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data):
        return len(data)


class ESP:
    def __init__(self, a):
        self.dir = os.path.abspath(a.dir)
        self.tmpdir = os.path.join(self.dir, ".tmp")
        os.makedirs(self.tmpdir, exist_ok=True)
        self.hostname = a.hostname
        self.host = a.host
        self.user = a.user
        self.password = a.password or ""
        self.plain_auth = a.plain_auth
        self.max_size = a.max_size
        self.smtputf8 = a.smtputf8
        self.dsn = a.dsn
        self.eod = a.eod
        self.advertise = a.advertise or []
        self.reject_rcpt = {r.lower() for r in (a.reject_rcpt or [])}
        self.timeout = a.timeout
        self.stall_time = a.stall_time
        self.verbose = a.verbose
        self.discard = a.discard
        self.oauth_tokens = set(a.oauth_token or [])
        self.mechs = ["PLAIN", "LOGIN"]
        if a.cram_md5:
            self.mechs.append("CRAM-MD5")
        if self.oauth_tokens:
            self.mechs += ["XOAUTH2", "OAUTHBEARER"]
        if a.mechs:
            self.mechs = a.mechs.upper().split()
        self.cli_faults = []
        if a.reject_first_token:
            self.cli_faults.append(("cli:reject-first-token", "reject-token",
                                    None, 1))
        for spec in a.fault or []:
            name, arg, limit = parse_fault(spec)
            self.cli_faults.append(("cli:" + spec, name, arg, limit))
        self.fault_uses = {}
        self.conn_seq = 0
        self.msg_seq = self.existing_messages()
        self.tasks = set()
        self.ssl_ctx = None
        self.cert_dir = os.path.dirname(os.path.abspath(a.cert)) if a.cert else None
        self.alt_ctx = {}
        if a.cert:
            self.ssl_ctx = self.make_ctx(a.cert, a.key)

    @staticmethod
    def make_ctx(cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        return ctx

    def ctx_for(self, faults):
        """The TLS context for a connection: --cert, or NAME's with cert:NAME."""
        fire, name = faults.take("cert")
        if not fire or self.cert_dir is None:
            return self.ssl_ctx
        if name not in self.alt_ctx:
            base = os.path.join(self.cert_dir, name)
            self.alt_ctx[name] = self.make_ctx(base + ".pem", base + ".key")
        return self.alt_ctx[name]

    def existing_messages(self):
        n = 0
        for name in os.listdir(self.dir):
            m = re.fullmatch(r"(\d+)\.(eml|json)", name)
            if m:
                n = max(n, int(m.group(1)))
        return n

    def faults_for_connection(self):
        path = os.path.join(self.dir, "faults")
        specs = self.cli_faults
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            return FaultSet(self, specs)
        specs = []
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                name, arg, limit = parse_fault(line)
            except ValueError as e:
                sys.stderr.write("esp: %s: bad fault %r: %s\n" % (path, line, e))
                continue
            specs.append(("file:" + line, name, arg, limit))
        return FaultSet(self, specs)

    def garbage(self):
        return b"HTTP/1.1 400 Bad Request\r\n\r\n" + secrets.token_bytes(256)

    def tmp_path(self):
        return os.path.join(self.tmpdir, "body-%s" % secrets.token_hex(8))

    def store(self, tmp, meta):
        """Move a received body into place as NNNN.eml, then write NNNN.json
        (atomically, via rename). Returns the queue id."""
        self.msg_seq += 1
        n = self.msg_seq
        qid = "%X%04d%s" % (os.getpid(), n, secrets.token_hex(3).upper())
        meta = dict(meta, id=n, queue_id=qid)
        os.replace(tmp, os.path.join(self.dir, "%04d.eml" % n))
        jtmp = self.tmp_path()
        with open(jtmp, "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(jtmp, os.path.join(self.dir, "%04d.json" % n))
        return qid

    def append_log(self, name, obj):
        if self.discard:
            return
        line = (json.dumps(obj) + "\n").encode()
        fd = os.open(os.path.join(self.dir, name),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def auth_log(self, obj):
        self.append_log("auth.log", obj)

    def conn_log(self, obj):
        self.append_log("conn.log", obj)

    # ------------------------------------------------------------ listeners
    def bind(self, port, listen):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, port))
        if listen:
            s.listen(256)
        s.setblocking(False)
        return s

    async def accept_loop(self, lsock, kind):
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(lsock)
            except OSError as e:
                sys.stderr.write("esp: accept: %s\n" % e)
                await asyncio.sleep(0.05)
                continue
            t = asyncio.create_task(self.connection(sock, addr, kind))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def connection(self, sock, addr, kind):
        loop = asyncio.get_running_loop()
        self.conn_seq += 1
        conn_id = self.conn_seq
        peer = "%s:%s" % (addr[0], addr[1])
        faults = self.faults_for_connection()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if faults.take("refuse")[0]:
            # reset the connection (listening is already done: best effort)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
            self.conn_log({"conn": conn_id, "kind": kind, "peer": peer,
                           "end": "fault:refuse", "cmds": [], "msgs": 0})
            return
        use_ssl = None
        if kind == "implicit":
            if faults.take("bad-tls")[0]:
                try:
                    await loop.sock_sendall(sock, self.garbage())
                except OSError:
                    pass
                sock.close()
                self.conn_log({"conn": conn_id, "kind": kind, "peer": peer,
                               "end": "fault:bad-tls", "cmds": [], "msgs": 0})
                return
            use_ssl = self.ctx_for(faults)
        done = loop.create_future()

        def connected(reader, writer):
            s = Session(self, reader, writer, kind, conn_id, faults, peer)
            task = asyncio.ensure_future(s.run())
            task.add_done_callback(lambda _t: done.done() or done.set_result(None))
            return task

        def factory():
            reader = asyncio.StreamReader(limit=READ_LIMIT)
            return asyncio.StreamReaderProtocol(reader, connected)

        try:
            await loop.connect_accepted_socket(
                factory, sock, ssl=use_ssl,
                ssl_handshake_timeout=self.timeout if use_ssl else None)
        except (ssl.SSLError, OSError, ConnectionError, asyncio.TimeoutError) as e:
            self.conn_log({"conn": conn_id, "kind": kind, "peer": peer,
                           "end": "tls-handshake-failed: %s" % e, "cmds": [],
                           "msgs": 0})
            try:
                sock.close()
            except OSError:
                pass
            return
        await done

    def report_count(self):
        """SIGUSR1: the number of messages accepted, on stderr and in DIR/count."""
        sys.stderr.write("esp: messages %d\n" % self.msg_seq)
        sys.stderr.flush()
        tmp = os.path.join(self.dir, ".count.tmp")
        with open(tmp, "w") as f:
            f.write("%d\n" % self.msg_seq)
        os.replace(tmp, os.path.join(self.dir, "count"))

    async def main(self, a):
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        loop.add_signal_handler(signal.SIGUSR1, self.report_count)
        refuse = any(s[1] == "refuse" and s[3] is None for s in self.cli_faults)
        ports = {}
        socks = []
        for kind, port in (("starttls", a.starttls_port),
                           ("implicit", a.implicit_port),
                           ("plain", a.plain_port)):
            if port is None:
                continue
            if kind in ("starttls", "implicit") and self.ssl_ctx is None:
                sys.exit("esp: --%s-port needs --cert and --key" % kind)
            s = self.bind(port, listen=not refuse)
            socks.append(s)
            ports[kind] = s.getsockname()[1]
            if not refuse:
                t = asyncio.create_task(self.accept_loop(s, kind))
                self.tasks.add(t)
        if not ports:
            sys.exit("esp: no port given")
        info = {"starttls": ports.get("starttls"), "implicit": ports.get("implicit"),
                "plain": ports.get("plain"), "pid": os.getpid()}
        if a.ready_file:
            tmp = a.ready_file + ".tmp.%d" % os.getpid()
            with open(tmp, "w") as f:
                json.dump(info, f)
            os.replace(tmp, a.ready_file)
        sys.stderr.write("esp: ready %s%s\n" % (json.dumps(info),
                                                " (refusing)" if refuse else ""))
        sys.stderr.flush()
        await stop
        for s in socks:
            s.close()
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True, help="where messages and logs go")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--hostname", default="esp.test", help="name in banner/EHLO")
    p.add_argument("--starttls-port", type=int)
    p.add_argument("--implicit-port", type=int)
    p.add_argument("--plain-port", type=int)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--plain-auth", action="store_true",
                   help="offer and require AUTH on the plain port too")
    p.add_argument("--cram-md5", action="store_true",
                   help="offer CRAM-MD5 too (checked against --password)")
    p.add_argument("--oauth-token", action="append", metavar="TOKEN",
                   help="an access token accepted for --user (XOAUTH2, "
                   "OAUTHBEARER offered); repeatable")
    p.add_argument("--reject-first-token", action="store_true",
                   help="refuse the first token presented (a stale token)")
    p.add_argument("--mechs", metavar="'M1 M2'",
                   help="the AUTH mechanisms advertised, replacing the default")
    p.add_argument("--ready-file")
    p.add_argument("--fault", action="append", metavar="NAME[:ARG][@N]")
    p.add_argument("--reject-rcpt", action="append", metavar="ADDR")
    p.add_argument("--max-size", type=int, default=0)
    p.add_argument("--smtputf8", action="store_true")
    p.add_argument("--dsn", action="store_true")
    p.add_argument("--advertise", action="append", metavar="EXT",
                   help="extra EHLO keyword (e.g. CHUNKING), not implemented")
    p.add_argument("--eod", choices=("strict", "lenient"), default="strict",
                   help="lenient: also take LF.LF as end of data (like "
                   "smuggling-prone servers)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for a client line")
    p.add_argument("--stall-time", type=float, default=300.0,
                   help="how long stall faults hold a connection")
    p.add_argument("--discard", action="store_true",
                   help="accept and count messages without writing files "
                   "(benchmarks); SIGUSR1 prints the count and writes DIR/count")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args()
    if (a.user is None) != (a.password is None):
        p.error("--user and --password go together")
    if bool(a.cert) != bool(a.key):
        p.error("--cert and --key go together")
    for spec in a.fault or []:
        try:
            parse_fault(spec)
        except ValueError as e:
            p.error("--fault %s: %s" % (spec, e))
    try:
        asyncio.run(ESP(a).main(a))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
