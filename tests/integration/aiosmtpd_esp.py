#!/usr/bin/python3
"""aiosmtpd_esp.py - a second, independent upstream for interoperability
tests: aiosmtpd (a real third-party SMTP server) with TLS and AUTH.

Two listeners on --host:
  starttls  aiosmtpd Controller with tls_context, require_starttls,
            auth_required, auth_require_tls
  implicit  aiosmtpd Controller with ssl_context (TLS from the first byte),
            auth_required, auth_require_tls

One user (--user/--password) is accepted. Messages are stored like the test
ESP does it (DIR/NNNN.eml + DIR/NNNN.json with mail_from, rcpt_tos,
mail_options, auth_user, tls_version, size, kind, queue_id), AUTH attempts in
DIR/auth.log. --ready-file gets {"starttls", "implicit", "pid"} as JSON once
both listen. Runs until SIGTERM/SIGINT.
"""

import argparse
import json
import os
import secrets
import signal
import socket
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Store:
    def __init__(self, d):
        self.dir = d
        self.lock = threading.Lock()
        self.n = 0
        os.makedirs(os.path.join(d, ".tmp"), exist_ok=True)

    def _atomic(self, name, data):
        tmp = os.path.join(self.dir, ".tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.dir, name))

    def save(self, data, meta):
        with self.lock:
            self.n += 1
            n = self.n
            qid = "AIO%X%04d%s" % (os.getpid(), n, secrets.token_hex(3).upper())
            meta = dict(meta, id=n, queue_id=qid, size=len(data))
            self._atomic("%04d.eml" % n, data)
            self._atomic("%04d.json" % n, json.dumps(meta, indent=1).encode())
            return qid

    def auth_log(self, obj):
        with self.lock:
            with open(os.path.join(self.dir, "auth.log"), "a") as f:
                f.write(json.dumps(obj) + "\n")


def tls_version(server):
    t = getattr(server, "transport", None)
    obj = t.get_extra_info("ssl_object") if t is not None else None
    return obj.version() if obj is not None else None


class Handler:
    def __init__(self, store, kind):
        self.store = store
        self.kind = kind

    async def handle_DATA(self, server, session, envelope):
        login = session.login_data
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "auth_user": login.decode("utf-8", "replace") if login else None,
            "tls_version": tls_version(server),
            "kind": self.kind,
        }
        qid = self.store.save(envelope.original_content, meta)
        return "250 2.0.0 Ok: queued as %s" % qid


def make_authenticator(store, user, password):
    def authenticator(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        u = auth_data.login.decode("utf-8", "replace")
        ok = u == user and auth_data.password == password.encode()
        store.auth_log({"user": u, "tls": tls_version(server) is not None,
                        "ok": ok, "mech": mechanism})
        return AuthResult(success=ok, handled=False, auth_data=auth_data)
    return authenticator


class ImplicitTLSSMTP(SMTP):
    """aiosmtpd 1.4 does not notice TLS it did not start itself: on an
    implicit-TLS listener with auth_require_tls=True it never offers AUTH and
    answers it with 538 (aio-libs/aiosmtpd issues #274 and #281, open). Mark
    the session as TLS-protected when the transport really is TLS."""

    def connection_made(self, transport):
        super().connection_made(transport)
        if transport.get_extra_info("ssl_object") is not None:
            self._tls_protocol = transport      # only tested for truth


class ImplicitTLSController(Controller):
    def factory(self):
        return ImplicitTLSSMTP(self.handler, **self.SMTP_kwargs)


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(kind, host, ctx, handler, auth, hostname):
    kw = dict(hostname=host, server_hostname=hostname, authenticator=auth,
              auth_required=True, auth_require_tls=True, ready_timeout=10)
    if kind == "starttls":
        kw.update(tls_context=ctx, require_starttls=True)
        cls = Controller
    else:
        kw.update(ssl_context=ctx)
        cls = ImplicitTLSController
    last = None
    for _ in range(5):      # the free port may be taken in between: retry
        c = cls(handler, port=free_port(host), **kw)
        try:
            c.start()
            return c
        except Exception as e:
            last = e
    raise SystemExit("aiosmtpd_esp: cannot start %s listener: %s" % (kind, last))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--hostname", default="aiosmtpd.test")
    p.add_argument("--ready-file")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    store = Store(a.dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)
    auth = make_authenticator(store, a.user, a.password)
    ctrls = {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        for kind in ("starttls", "implicit"):
            ctrls[kind] = start(kind, a.host, ctx, Handler(store, kind), auth, a.hostname)
        info = {"starttls": ctrls["starttls"].port, "implicit": ctrls["implicit"].port,
                "plain": None, "pid": os.getpid()}
        if a.ready_file:
            tmp = a.ready_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(info, f)
            os.replace(tmp, a.ready_file)
        sys.stderr.write("aiosmtpd_esp: ready %s\n" % json.dumps(info))
        sys.stderr.flush()
        while not stop.wait(0.5):
            pass
    finally:
        for c in ctrls.values():
            try:
                c.stop()
            except Exception:
                pass


if __name__ == "__main__":
    main()
