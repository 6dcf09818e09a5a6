"""test_oauth2_helpers.py - contrib/oauth2/relay25-oauth2-token offline: a
fake token endpoint (http.server on 127.0.0.1) records each request, and
the helper is pointed at it with RELAY25_OAUTH2_TOKEN_URL /
RELAY25_OAUTH2_AUTH_URL. Checked: the request each flow sends (grant type,
scope, credentials read from files or the environment, the tenant in the
URL), the "TOKEN LIFETIME" output relay25's token_command expects, refresh
token rotation written back to its file, errors that name the cause but
never a secret, no credential accepted on the command line, and the
authorize flow (PKCE, state, loopback redirect) end to end."""

import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import unittest
import urllib.parse
import urllib.request
from pathlib import Path

from lib import PYTHON, ROOT

HELPER = ROOT / "contrib" / "oauth2" / "relay25-oauth2-token"
SECRET = "cl1ent-s3cret-value"
REFRESH = "1//refresh-token-value"
CLIENT_ID = "00000000-aaaa-bbbb-cccc-client-id"


class FakeTokenEndpoint:
    """Answers POSTs with the next queued (status, JSON) and records
    (path, form fields)."""

    def __init__(self):
        self.requests = []
        self.answers = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n).decode()
                outer.requests.append((self.path, urllib.parse.parse_qs(
                    body, strict_parsing=True), self.headers.get("Content-Type")))
                status, obj = outer.answers.pop(0) if outer.answers else (
                    200, {"access_token": "at-default", "expires_in": 3599})
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/{tenant}/oauth2/v2.0/token"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class OAuth2Helper(unittest.TestCase):

    def setUp(self):
        if not HELPER.exists():
            self.skipTest("no %s" % HELPER)
        self.tmp = Path(tempfile.mkdtemp(prefix="relay25-oauth2-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ep = FakeTokenEndpoint()
        self.addCleanup(self.ep.stop)
        self.files = {}
        for name, value in (("client_id", CLIENT_ID), ("client_secret", SECRET),
                            ("refresh_token", REFRESH)):
            p = self.tmp / name
            p.write_text(value + "\n")
            os.chmod(p, 0o600)
            self.files[name] = str(p)

    def cleanup_tmp(self):
        """run.py's hook; the directory is removed by a cleanup."""

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RELAY25_OAUTH2_")}
        env["RELAY25_OAUTH2_TOKEN_URL"] = self.ep.url()
        env.update(extra)
        return env

    def run_helper(self, *args, env=None, stdin=None, timeout=30):
        return subprocess.run([PYTHON, str(HELPER)] + list(args), env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout,
                              input=stdin)

    def file_args(self, *names):
        out = []
        for n in names:
            out += ["--%s-file" % n.replace("_", "-"), self.files[n]]
        return out

    def assert_no_secret(self, text):
        for s in (SECRET, REFRESH, "new-refresh-token"):
            self.assertNotIn(s, text)

    # ------------------------------------------------------------ Microsoft
    def test_microsoft_client_credentials(self):
        self.ep.answers.append((200, {"token_type": "Bearer", "expires_in": 3599,
                                      "access_token": "eyJ0eXAi.app-token.sig"}))
        r = self.run_helper("--provider", "microsoft", "--tenant", "contoso.onmicrosoft.com",
                            *self.file_args("client_id", "client_secret"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "eyJ0eXAi.app-token.sig 3599\n")
        path, form, ctype = self.ep.requests[0]
        self.assertEqual(path, "/contoso.onmicrosoft.com/oauth2/v2.0/token")
        self.assertEqual(ctype, "application/x-www-form-urlencoded")
        self.assertEqual(form, {"grant_type": ["client_credentials"],
                                "client_id": [CLIENT_ID],
                                "client_secret": [SECRET],
                                "scope": ["https://outlook.office365.com/.default"]})
        self.assert_no_secret(r.stderr)

    def test_microsoft_refresh_rotates_the_refresh_token(self):
        self.ep.answers.append((200, {"access_token": "user-token", "expires_in": 4000,
                                      "refresh_token": "new-refresh-token"}))
        r = self.run_helper("token", "--provider", "microsoft", "--flow", "refresh",
                            "--tenant", "common",
                            *self.file_args("client_id", "refresh_token"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "user-token 4000\n")
        path, form, _ = self.ep.requests[0]
        self.assertEqual(path, "/common/oauth2/v2.0/token")
        self.assertEqual(form["grant_type"], ["refresh_token"])
        self.assertEqual(form["refresh_token"], [REFRESH])
        self.assertEqual(form["scope"],
                         ["https://outlook.office365.com/SMTP.Send offline_access"])
        self.assertNotIn("client_secret", form)      # a public client
        p = Path(self.files["refresh_token"])
        self.assertEqual(p.read_text(), "new-refresh-token\n")
        self.assertEqual(p.stat().st_mode & 0o777, 0o600)
        self.assertEqual([f.name for f in self.tmp.iterdir() if f.name.startswith(".")], [])

    def test_credentials_from_the_environment(self):
        env = self.env(RELAY25_OAUTH2_CLIENT_ID=CLIENT_ID,
                       RELAY25_OAUTH2_CLIENT_SECRET=SECRET)
        r = self.run_helper("--provider", "microsoft", "--tenant", "t1", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "at-default 3599\n")
        form = self.ep.requests[0][1]
        self.assertEqual(form["client_id"], [CLIENT_ID])
        self.assertEqual(form["client_secret"], [SECRET])

    def test_tenant_required_for_microsoft(self):
        r = self.run_helper("--provider", "microsoft",
                            *self.file_args("client_id", "client_secret"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("--tenant is required", r.stderr)
        self.assertEqual(self.ep.requests, [])

    # ------------------------------------------------------------ Google
    def test_google_refresh(self):
        self.ep.answers.append((200, {"access_token": "ya29.google-token",
                                      "expires_in": 3599, "scope": "https://mail.google.com/",
                                      "token_type": "Bearer"}))
        env = self.env(RELAY25_OAUTH2_TOKEN_URL=self.ep.url("/token"))
        r = self.run_helper("--provider", "google", env=env,
                            *self.file_args("client_id", "client_secret", "refresh_token"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "ya29.google-token 3599\n")
        path, form, _ = self.ep.requests[0]
        self.assertEqual(path, "/token")
        self.assertEqual(form, {"grant_type": ["refresh_token"], "client_id": [CLIENT_ID],
                                "client_secret": [SECRET], "refresh_token": [REFRESH]})
        # Google kept the refresh token: the file is untouched
        self.assertEqual(Path(self.files["refresh_token"]).read_text(), REFRESH + "\n")

    def test_google_needs_client_secret_and_refresh_token(self):
        r = self.run_helper("--provider", "google", *self.file_args("client_id"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("no refresh token", r.stderr)
        self.assertIn("RELAY25_OAUTH2_REFRESH_TOKEN", r.stderr)
        self.assertEqual(self.ep.requests, [])

    def test_token_url_option(self):
        r = self.run_helper("--provider", "google", "--token-url", self.ep.url("/opt"),
                            env=self.env(RELAY25_OAUTH2_TOKEN_URL="http://127.0.0.1:1/x"),
                            *self.file_args("client_id", "client_secret", "refresh_token"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.ep.requests[0][0], "/opt")

    # ------------------------------------------------------------ errors
    def test_refused_names_the_error_not_the_secret(self):
        self.ep.answers.append((400, {"error": "invalid_grant",
                                      "error_description": "AADSTS70000: refresh token "
                                      "expired\nTrace ID: x"}))
        r = self.run_helper("--provider", "microsoft", "--flow", "refresh",
                            "--tenant", "t", *self.file_args("client_id", "refresh_token"))
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        self.assertIn("HTTP 400", r.stderr)
        self.assertIn("invalid_grant: AADSTS70000", r.stderr)
        self.assert_no_secret(r.stderr)

    def test_unreachable_endpoint(self):
        env = self.env(RELAY25_OAUTH2_TOKEN_URL="http://127.0.0.1:1/token")
        r = self.run_helper("--provider", "google", env=env,
                            *self.file_args("client_id", "client_secret", "refresh_token"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot reach the token endpoint", r.stderr)
        self.assert_no_secret(r.stderr)

    def test_bad_answers(self):
        for status, obj, want in (
                (200, {"token_type": "Bearer"}, "no usable access_token"),
                (200, {"access_token": "has space"}, "no usable access_token"),
                (200, ["not", "an", "object"], "not a JSON object")):
            self.ep.answers.append((status, obj))
            r = self.run_helper("--provider", "microsoft", "--tenant", "t",
                                *self.file_args("client_id", "client_secret"))
            self.assertEqual(r.returncode, 1, obj)
            self.assertIn(want, r.stderr)
            self.assertEqual(r.stdout, "")

    def test_no_lifetime_prints_only_the_token(self):
        self.ep.answers.append((200, {"access_token": "tok-without-lifetime"}))
        r = self.run_helper("--provider", "microsoft", "--tenant", "t",
                            *self.file_args("client_id", "client_secret"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "tok-without-lifetime\n")

    def test_no_credentials_on_the_command_line(self):
        # not even as an abbreviation of the --*-file options
        for opt in ("--client-secret", "--refresh-token", "--client-id"):
            r = self.run_helper("--provider", "google", opt + "=value")
            self.assertEqual(r.returncode, 2, opt)
            self.assertIn("unrecognized arguments", r.stderr)
        self.assertEqual(self.ep.requests, [])

    def test_missing_or_empty_credential_file(self):
        empty = self.tmp / "empty"
        empty.write_text("\n")
        r = self.run_helper("--provider", "microsoft", "--tenant", "t",
                            "--client-id-file", str(empty),
                            "--client-secret-file", self.files["client_secret"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("the first line is empty", r.stderr)
        r = self.run_helper("--provider", "microsoft", "--tenant", "t",
                            "--client-id-file", str(self.tmp / "nope"),
                            "--client-secret-file", self.files["client_secret"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("No such file", r.stderr)

    # ------------------------------------------------------------ authorize
    def test_authorize_loopback_flow(self):
        """The consent URL carries PKCE and state; the browser's redirect to
        the loopback listener is exchanged for tokens and the refresh token
        stored."""
        self.ep.answers.append((200, {"access_token": "first-access",
                                      "refresh_token": "new-refresh-token",
                                      "expires_in": 3599}))
        rt = self.tmp / "stored-refresh"
        env = self.env(RELAY25_OAUTH2_TOKEN_URL=self.ep.url("/token"),
                       RELAY25_OAUTH2_AUTH_URL="https://accounts.example.invalid/auth")
        p = subprocess.Popen([PYTHON, str(HELPER), "authorize", "--provider", "google",
                              "--wait", "20", "--refresh-token-file", str(rt)]
                             + self.file_args("client_id", "client_secret"),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        url = None
        for _ in range(20):
            line = p.stderr.readline()
            m = re.search(r"(https://accounts\.example\.invalid/auth\?\S+)", line)
            if m:
                url = m.group(1)
                break
        self.assertIsNotNone(url, "no authorization URL printed")
        q = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}
        self.assertEqual(q["client_id"], CLIENT_ID)
        self.assertEqual(q["scope"], "https://mail.google.com/")
        self.assertEqual(q["code_challenge_method"], "S256")
        self.assertEqual(q["access_type"], "offline")
        self.assertTrue(q["redirect_uri"].startswith("http://127.0.0.1:"))
        self.assertNotIn(SECRET, url)
        # the browser comes back with the code
        back = q["redirect_uri"] + "?" + urllib.parse.urlencode(
            {"code": "auth-code-1", "state": q["state"]})
        with urllib.request.urlopen(back, timeout=10) as resp:
            self.assertEqual(resp.status, 200)
        out, err = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(rt.read_text(), "new-refresh-token\n")
        self.assertEqual(rt.stat().st_mode & 0o777, 0o600)
        form = self.ep.requests[0][1]
        self.assertEqual(form["grant_type"], ["authorization_code"])
        self.assertEqual(form["code"], ["auth-code-1"])
        self.assertEqual(form["redirect_uri"], [q["redirect_uri"]])
        self.assertEqual(form["client_secret"], [SECRET])
        import base64
        import hashlib
        verifier = form["code_verifier"][0]
        self.assertEqual(base64.urlsafe_b64encode(hashlib.sha256(
            verifier.encode()).digest()).rstrip(b"=").decode(), q["code_challenge"])
        self.assert_no_secret(out + err)

    def test_authorize_paste_rejects_wrong_state(self):
        env = self.env(RELAY25_OAUTH2_AUTH_URL="https://login.example.invalid/{tenant}/auth")
        r = self.run_helper("authorize", "--provider", "microsoft", "--tenant", "t",
                            "--paste", "--refresh-token-file", str(self.tmp / "rt"),
                            *self.file_args("client_id"), env=env,
                            stdin="http://localhost:8765/?code=x&state=forged\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn("state differs", r.stderr)
        self.assertIn("https://login.example.invalid/t/auth?", r.stderr)
        self.assertIn("offline_access", urllib.parse.unquote_plus(r.stderr))
        self.assertEqual(self.ep.requests, [])
        self.assertFalse((self.tmp / "rt").exists())
