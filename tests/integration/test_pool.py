"""test_pool.py - the warm upstream pool (issue 5): sessions are reused,
retired after pool_max_messages, replaced after a 421, probed after idling,
and a pooled session that died unnoticed is replaced transparently - the
client never sees it and no message is ever sent twice."""

import time

from lib import RelayTestCase, make_message, upstream_for, wait_for, SLOW


class Pool(RelayTestCase):

    def send(self, relay, n, tag):
        for i in range(n):
            s = self.smtp(relay)
            s.ehlo()
            msg = make_message(subject="%s %d" % (tag, i))
            refused = s.sendmail("a@example.test", ["b@example.test"], msg)
            self.assertEqual(refused, {})
            s.quit()

    def auth_connections(self, esp):
        return [e for e in esp.conn_log() if e.get("auth_user")]

    def test_sessions_are_reused(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp, pool_size=2))
        # the pool warms up at start: two sessions (plus the probe)
        wait_for(lambda: relay.log_text().count("session ready") >= 2,
                 5 * SLOW, "pool warm")
        self.send(relay, 6, "reuse")
        esp.wait_messages(6)
        self.assertEqual(len(esp.messages()), 6)
        relay.stop()
        conns = self.auth_connections(esp)
        # probe + at most the pool's two sessions: no login per message
        self.assertLessEqual(len(conns), 3, conns)
        carried = sum(e["msgs"] for e in conns)
        self.assertEqual(carried, 6)
        # every reuse was preceded by RSET
        rsets = sum(1 for e in conns for c in e["cmds"] if c.upper() == "RSET")
        self.assertGreaterEqual(rsets, 5)
        self.note("6 messages over %d upstream logins" % len(conns))

    def test_retired_after_max_messages(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp, pool_size=1,
                                              pool_max_messages=2))
        self.send(relay, 5, "retire")
        esp.wait_messages(5)
        relay.stop()
        conns = self.auth_connections(esp)
        self.assertTrue(all(e["msgs"] <= 2 for e in conns), conns)
        self.assertEqual(sum(e["msgs"] for e in conns), 5)

    def test_421_at_mail_on_pooled_session_is_retried(self):
        # the ESP allows one message per connection, then says 421 at MAIL
        esp = self.start_esp(faults=["max-msgs:1"])
        relay = self.start_relay(upstream_for(esp, pool_size=1))
        self.send(relay, 4, "421")      # every client sees 250
        esp.wait_messages(4)
        time.sleep(0.3)
        self.assertEqual(len(esp.messages()), 4)   # never twice
        self.assertTrue(any(e["end"] == "fault:max-msgs" for e in esp.conn_log()))

    def test_dead_pooled_session_is_replaced_transparently(self):
        esp = self.start_esp()
        # one message per session: each use makes the pool reconnect
        relay = self.start_relay(upstream_for(esp, pool_size=1,
                                              pool_max_messages=1))
        wait_for(lambda: "session ready" in relay.log_text(), 5 * SLOW, "pool warm")
        # the next pooled session dies when MAIL arrives (faults apply to
        # connections accepted from now on)
        esp.set_faults(["close-at-mail@1"])
        self.send(relay, 1, "first")
        wait_for(lambda: relay.log_text().count("session ready") >= 2,
                 5 * SLOW, "pool refilled")
        self.send(relay, 3, "after")
        esp.wait_messages(4)
        time.sleep(0.3)
        msgs = esp.messages()
        self.assertEqual(len(msgs), 4, "a message was lost or sent twice")
        self.assertTrue(any(e["end"] == "fault:close-at-mail" for e in esp.conn_log()))
        self.assertIn("retrying on a fresh one", relay.log_text())

    def test_idle_session_is_probed(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp, pool_size=1,
                                              pool_max_messages=1,
                                              pool_idle_timeout="3s"))
        wait_for(lambda: "session ready" in relay.log_text(), 5 * SLOW, "pool warm")
        esp.set_faults(["close-at-noop"])
        self.send(relay, 1, "warm")
        wait_for(lambda: relay.log_text().count("session ready") >= 2,
                 5 * SLOW, "pool refilled")
        time.sleep(1.8)              # idle past the probe threshold (1.5 s)
        self.send(relay, 1, "probed")
        esp.wait_messages(2)
        self.assertEqual(len(esp.messages()), 2)
        self.assertTrue(any(e["end"] == "fault:close-at-noop" for e in esp.conn_log()))

    def test_pool_refill_backs_off_when_upstream_refuses(self):
        esp = self.start_esp(faults=["auth-fail"])
        relay = self.start_relay(upstream_for(esp, pool_size=2))
        time.sleep(3.5)
        relay.stop()
        attempts = len(esp.auth_log())
        # probe + back-off 1 s, 2 s: a handful of attempts, not a storm
        self.assertLessEqual(attempts, 5, attempts)
        self.assertGreaterEqual(attempts, 2, attempts)


class Resumption(RelayTestCase):
    """TLS session resumption (issue 5): after the first full handshake to
    an upstream, new connections resume (TLS 1.3 tickets), over STARTTLS
    and implicit TLS."""

    def check(self, kind):
        esp = self.start_esp(kinds=("starttls", "implicit"))
        relay = self.start_relay(upstream_for(esp, kind))
        for i in range(3):
            s = self.smtp(relay)
            s.ehlo()
            self.assertEqual(s.sendmail("a@example.test", ["b@example.test"],
                                        make_message(subject="r%d" % i)), {})
            s.quit()
        esp.wait_messages(3)
        relay.stop()
        conns = [e for e in esp.conn_log() if e.get("tls_version")]
        self.assertGreaterEqual(len(conns), 4, conns)     # probe + 3
        self.assertFalse(conns[0]["tls_resumed"], "the first handshake is full")
        resumed = sum(1 for e in conns[1:] if e["tls_resumed"])
        self.assertGreaterEqual(resumed, 2, conns)
        self.note("%s: %d of %d later connections resumed" % (kind, resumed, len(conns) - 1))

    def test_resumption_starttls(self):
        self.check("starttls")

    def test_resumption_implicit(self):
        self.check("implicit")
