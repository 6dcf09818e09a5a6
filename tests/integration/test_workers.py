"""test_workers.py - `workers = N` (issue 5): N processes share the
listeners, each delivers, a worker that dies is restarted, SIGTERM stops
them all cleanly."""

import os
import signal
import time

from lib import RelayTestCase, make_message, upstream_for, wait_for, SLOW


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class Workers(RelayTestCase):

    def send(self, relay, n):
        for i in range(n):
            s = self.smtp(relay)
            s.ehlo()
            self.assertEqual(s.sendmail("a@example.test", ["b@example.test"],
                                        make_message(subject="w%d" % i)), {})
            s.quit()

    def test_two_workers_serve_and_stop(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), server={"workers": "2"})
        master = relay.proc.pid
        wait_for(lambda: len(children(master)) == 2, 5 * SLOW, "two workers")
        self.send(relay, 10)
        esp.wait_messages(10)
        self.assertEqual(len(esp.messages()), 10)
        log = relay.log_text()
        self.assertIn("started worker 0", log)
        self.assertIn("started worker 1", log)

    def test_dead_worker_is_restarted(self):
        esp = self.start_esp()
        relay = self.start_relay(upstream_for(esp), server={"workers": "2"})
        master = relay.proc.pid
        wait_for(lambda: len(children(master)) == 2, 5 * SLOW, "two workers")
        victim = children(master)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(children(master)) == 2 and victim not in children(master),
                 5 * SLOW, "a replacement worker")
        self.assertIn("restarting", relay.log_text())
        self.send(relay, 4)
        esp.wait_messages(4)
