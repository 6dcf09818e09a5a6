#!/usr/bin/python3
"""run.py - run the integration tests (every tests/integration/test_*.py).

  run.py [-k SUBSTRING]... [-x] [--list]

Prints one line per test with its result and time, the relay25/ESP logs of
every failed test, and ends with "integration: N passed, N failed[, N
skipped]". Exit code 1 if anything failed. See lib.py for the environment
(RELAY25_BIN, SANITIZE, VALGRIND, KEEP_TMP).
"""

import os
import sys

# The tests need Debian's Python (python3-aiosmtpd is installed for it);
# re-run under it if started by another interpreter without aiosmtpd.
if __name__ == "__main__" and os.path.exists("/usr/bin/python3") \
        and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") \
        and not os.environ.get("RELAY25_NO_REEXEC"):
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        os.environ["RELAY25_NO_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)

import argparse
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


class Result(unittest.TestResult):
    def __init__(self, stream, verbose_logs=True):
        super().__init__()
        self.out = stream
        self.passed = 0
        self.nfailed = 0
        self.nskipped = 0
        self.shown = set()
        self.failed_ids = []

    def startTest(self, test):
        super().startTest(test)
        self.t0 = time.monotonic()
        self.bad = False
        self.msgs = []

    def _name(self, test):
        return test.id().replace("test_", "", 0)

    def _logs(self, test):
        if id(test) in self.shown:
            return ""
        self.shown.add(id(test))
        out = []
        for label, path in getattr(test, "log_files", []):
            try:
                text = Path(path).read_text(errors="replace")
            except OSError:
                continue
            lines = text.splitlines()
            tail = lines[-80:]
            out.append("    ---- %s (%s)%s" % (
                label, path, ", last 80 lines" if len(lines) > 80 else ""))
            out += ["    | " + l for l in tail]
        return "\n".join(out)

    def addSuccess(self, test):
        super().addSuccess(test)

    def _fail(self, test, err, kind):
        self.bad = True
        self.msgs.append("  %s: %s" % (kind, self._exc_info_to_string(err, test).rstrip()
                                       .replace("\n", "\n    ")))
        logs = self._logs(test)
        if logs:
            self.msgs.append(logs)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(test, err, "FAIL")

    def addError(self, test, err):
        super().addError(test, err)
        self._fail(test, err, "ERROR")

    def addSubTest(self, test, subtest, err):
        # a failing subTest fails its test (the base class only records it)
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "FAIL" if issubclass(err[0], test.failureException) else "ERROR"
            self._fail(test, err, "%s %s" % (kind, subtest._subDescription()))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skip_reason = reason

    def stopTest(self, test):
        super().stopTest(test)
        dt = time.monotonic() - self.t0
        if self.bad:
            status = "FAIL"
            self.nfailed += 1
            self.failed_ids.append(test.id())
        elif getattr(self, "skip_reason", None) is not None:
            status = "skipped (%s)" % self.skip_reason
            self.nskipped += 1
        else:
            status = "ok"
            self.passed += 1
        self.skip_reason = None
        self.out.write("%-70s %s (%.1fs)\n" % (test.id(), status, dt))
        for n in getattr(test, "notes", []):
            self.out.write("    " + n + "\n")
        for m in self.msgs:
            self.out.write(m + "\n")
        self.out.flush()
        tmp = getattr(test, "tmp", None)
        if tmp is not None:
            if self.bad:
                self.out.write("    (test directory kept: %s)\n" % tmp)
            else:
                test.cleanup_tmp()


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", action="append", default=[],
                    help="run only tests whose id contains this (repeatable)")
    ap.add_argument("-x", "--exitfirst", action="store_true")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    loader = unittest.TestLoader()
    suite = loader.discover(str(HERE), pattern="test_*.py", top_level_dir=str(HERE))
    tests = list(iter_tests(suite))
    if a.k:
        tests = [t for t in tests if any(k in t.id() for k in a.k)]
    if a.list:
        for t in tests:
            print(t.id())
        return 0
    import lib
    print("integration: %d tests, relay25 = %s%s%s" % (
        len(tests), lib.relay25_bin(), " (SANITIZE)" if lib.SANITIZE else "",
        " (VALGRIND)" if lib.VALGRIND else ""), flush=True)
    res = Result(sys.stdout)
    t0 = time.monotonic()
    for t in tests:
        if isinstance(t, unittest.loader._FailedTest):
            pass
        t(res)
        if a.exitfirst and res.nfailed:
            break
    dt = time.monotonic() - t0
    if res.failed_ids:
        print("failed:")
        for i in res.failed_ids:
            print("  " + i)
    line = "integration: %d passed, %d failed" % (res.passed, res.nfailed)
    if res.nskipped:
        line += ", %d skipped" % res.nskipped
    print("(%.0fs)" % dt)
    print(line)
    return 1 if res.nfailed else 0


if __name__ == "__main__":
    sys.exit(main())
