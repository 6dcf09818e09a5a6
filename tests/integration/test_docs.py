"""test_docs.py - the documentation keeps up with the code: every key of
src/config.c's key table (with its section and default) is described in
man/relay25.ini.5, shown in etc/relay25.ini and listed in README.md; every
option of `relay25 -h` is in man/relay25.8; the man pages format without
groff warnings; `make install` installs them and `make uninstall` removes
everything it installed."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from lib import ROOT, check_bin, relay25_bin

SECTIONS = {"SRV": "server", "UPS": "upstream", "MET": "metrics"}


def config_keys():
    """[(section, key, default)] from the cfg_keys[] table, in order."""
    src = (ROOT / "src" / "config.c").read_text()
    m = re.search(r"static const struct cfg_key cfg_keys\[\] = \{(.*?)\n\};", src, re.S)
    assert m, "cfg_keys[] table not found in src/config.c"
    out = []
    for e in re.finditer(r"\{\s*(SRV|UPS|MET)\([a-z_]+\),\s*\.key = \"([a-z_]+)\"(.*?)\},",
                         m.group(1), re.S):
        d = re.search(r"\.def = \"([^\"]*)\"", e.group(3))
        out.append((SECTIONS[e.group(1)], e.group(2), d.group(1) if d else ""))
    assert len(out) >= 40, "only %d keys parsed from cfg_keys[]" % len(out)
    return out


def roff_text(lines):
    """Rough plain text of roff source lines: macros dropped, quotes and
    escapes removed, words joined."""
    words = []
    for l in lines:
        if l.startswith(".\\\""):
            continue
        l = re.sub(r"^\.(B|I|BR|RB|IR|RI|BI|IB)\s+", "", l)
        if l.startswith("."):
            continue
        l = l.replace("\\-", "-").replace("\\e", "\\").replace('"', "")
        l = re.sub(r"\\f[BIRP]", "", l)
        words.append(l)
    return re.sub(r"\s+([.,;:)])(\s|$)", r"\1\2", " ".join(words))


def man_sections(text):
    """{heading: [lines]} of a roff page, by .SH."""
    out, cur = {}, None
    for l in text.splitlines():
        if l.startswith(".SH"):
            cur = l[3:].strip().strip('"')
            out[cur] = []
        elif cur is not None:
            out[cur].append(l)
    return out


def man_entry(lines, key):
    """Body lines of the '.TP / .B key' entry, or None."""
    for i in range(len(lines) - 1):
        if lines[i] == ".TP" and lines[i + 1] == ".B " + key:
            body = []
            for l in lines[i + 2:]:
                if re.match(r"\.(TP|SH|SS|PP|IP)\b", l):
                    break
                body.append(l)
            return body
    return None


class Docs(unittest.TestCase):

    def setUp(self):
        self.keys = config_keys()

    # Each test collects every problem and reports them all at once (no
    # subTest: run.py's result class does not report subtest failures).

    def test_every_key_in_man_page(self):
        secs = man_sections((ROOT / "man" / "relay25.ini.5").read_text())
        where = {"server": "THE [server] SECTION",
                 "upstream": "THE [upstream] AND [upstream:NAME] SECTIONS",
                 "metrics": "THE [metrics] SECTION"}
        for h in where.values():
            self.assertIn(h, secs)
        bad = []
        for sec, key, default in self.keys:
            body = man_entry(secs[where[sec]], key)
            if body is None:
                bad.append("[%s] %s: no '.TP/.B %s' entry under %s" % (sec, key, key, where[sec]))
                continue
            text = roff_text(body)
            if not text.startswith("Default:"):
                bad.append("[%s] %s: entry does not start with 'Default:': %r" % (sec, key, text))
            elif default and not (text.startswith("Default: %s." % default) or
                                  text.startswith("Default: %s " % default)):
                bad.append("[%s] %s: default %r not stated: %r" % (sec, key, default, text[:80]))
            elif len(text) < len("Default: x. ") + 10:
                bad.append("[%s] %s: no explanation" % (sec, key))
        self.assertEqual(bad, [], "man/relay25.ini.5:\n" + "\n".join(bad))

    def test_every_key_in_example_ini(self):
        sec, found = None, {}
        for l in (ROOT / "etc" / "relay25.ini").read_text().splitlines():
            m = re.match(r"^\[([a-z]+)(:[A-Za-z0-9-]+)?\]", l)
            if m:
                sec = m.group(1)
                continue
            m = re.match(r"^;?([a-z_]+) =\s*(.*)$", l)
            if m and sec:
                found[(sec, m.group(1))] = (l.startswith(";"), m.group(2).strip())
        bad = []
        for sec, key, default in self.keys:
            if (sec, key) not in found:
                bad.append("[%s] %s: missing" % (sec, key))
                continue
            commented, value = found[(sec, key)]
            if commented and default and value != default:
                bad.append("[%s] ;%s = %s, but the default is %r" % (sec, key, value, default))
        self.assertEqual(bad, [], "etc/relay25.ini:\n" + "\n".join(bad))

    def test_every_key_in_readme(self):
        text = (ROOT / "README.md").read_text()
        heads = {"server": "### `[server]`",
                 "upstream": "### `[upstream]` and `[upstream:NAME]`",
                 "metrics": "### `[metrics]`"}
        bad = []
        for sec, key, default in self.keys:
            i = text.find(heads[sec] + "\n")
            self.assertGreaterEqual(i, 0, "README has no %s heading" % heads[sec])
            part = text[i + len(heads[sec]) + 1:]
            part = part[:part.find("\n## ")] if "\n## " in part else part
            part = part[:part.find("\n### ")] if "\n### " in part else part
            row = re.search(r"(?m)^\| `%s` \| ([^|]*) \|" % key, part)
            if row is None:
                bad.append("%s: no row for `%s`" % (heads[sec], key))
            elif default and default not in row.group(1).replace("`", ""):
                bad.append("%s: `%s` default %r not in %r" % (heads[sec], key, default,
                                                             row.group(1)))
        self.assertEqual(bad, [], "README.md:\n" + "\n".join(bad))

    def test_every_option_in_man_page(self):
        b = relay25_bin()
        check_bin(b)
        h = subprocess.run([b, "-h"], capture_output=True, text=True, timeout=10)
        self.assertEqual(h.returncode, 0)
        longs = sorted(set(re.findall(r"(?<![\w-])--([a-z][a-z-]*)", h.stdout)))
        shorts = sorted(set(re.findall(r"(?m)^\s+-([a-zA-Z]),", h.stdout)))
        self.assertGreaterEqual(len(longs), 7, h.stdout)
        self.assertIn("check", longs)
        self.assertIn("ping", longs)
        secs = man_sections((ROOT / "man" / "relay25.8").read_text())
        for s in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "FILES",
                  "ENVIRONMENT", "EXIT STATUS", "SEE ALSO"):
            self.assertIn(s, secs)
        def plain(lines):
            return re.sub(r"\\f[BIRP]", " ", "\n".join(lines)).replace("\\-", "-")
        # option tags: the lines right after .TP in OPTIONS
        tags = "\n".join(plain([l]) for i, l in enumerate(secs["OPTIONS"])
                         if i and secs["OPTIONS"][i - 1] == ".TP")
        synopsis = plain(secs["SYNOPSIS"])
        for o in longs:
            self.assertTrue(re.search(r"(?<![\w-])--%s(?![\w-])" % re.escape(o), tags),
                            "--%s has no entry in relay25.8 OPTIONS" % o)
        for o in shorts:
            self.assertTrue(re.search(r"(?<![\w-])-%s(?![\w-])" % o, tags),
                            "-%s has no entry in relay25.8 OPTIONS" % o)
            self.assertRegex(synopsis, r"-%s\b" % o, "-%s not in the SYNOPSIS" % o)
        for o in ("check", "ping"):
            self.assertRegex(synopsis, r"--%s\b" % o)

    def test_man_pages_format_without_warnings(self):
        if not shutil.which("groff"):
            raise unittest.SkipTest("groff not installed")
        for page in ("relay25.8", "relay25.ini.5"):
            r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z",
                                str(ROOT / "man" / page)],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual((page, r.returncode, r.stderr), (page, 0, ""))

    def test_make_install_and_uninstall(self):
        """Installs relay25, the example ini, both man pages and the systemd
        files under DESTDIR; uninstall leaves no file behind. Uses the
        built binary as it is (make -o: never rebuilds)."""
        if not shutil.which("make"):
            raise unittest.SkipTest("make not installed")
        built = ROOT / "build" / "relay25"
        if not os.access(built, os.X_OK):
            raise unittest.SkipTest("build/relay25 not built")
        dest = Path(tempfile.mkdtemp(prefix="relay25-install-"))
        self.addCleanup(shutil.rmtree, dest, True)
        args = ["make", "-s", "-C", str(ROOT), "-o", "build/relay25", "BUILD=build",
                "DESTDIR=%s" % dest, "PREFIX=/usr"]
        r = subprocess.run(args + ["install", "install-systemd"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
        self.assertEqual(files, [
            "etc/relay25/relay25.ini.example",
            "usr/lib/systemd/system/relay25.service",
            "usr/lib/systemd/system/relay25.socket",
            "usr/lib/sysusers.d/relay25.conf",
            "usr/sbin/relay25",
            "usr/sbin/relay25-sendmail",
            "usr/share/man/man5/relay25.ini.5",
            "usr/share/man/man8/relay25-sendmail.8",
            "usr/share/man/man8/relay25.8",
        ])
        unit = (dest / "usr/lib/systemd/system/relay25.service").read_text()
        self.assertRegex(unit, r"(?m)^ExecStart=/usr/sbin/relay25 ")
        self.assertEqual((dest / "usr/sbin/relay25").stat().st_mode & 0o777, 0o755)
        r = subprocess.run(args + ["uninstall"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
        self.assertEqual(left, [])
