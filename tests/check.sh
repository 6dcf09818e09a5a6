#!/bin/sh
# make check: every unit test binary, then the integration suite; one
# summary line at the end; non-zero exit on any failure.
#   tests/check.sh RELAY25_BIN SANITIZE UNIT_BIN...
set -u
bin=$1; sanitize=$2; shift 2
top=$(cd "$(dirname "$0")/.." && pwd)
log=$(mktemp -d "${TMPDIR:-/tmp}/relay25-check.XXXXXX")
trap 'rm -rf "$log"' EXIT
upass=0; ufail=0; bad=0
for t in "$@"; do
	name=$(basename "$t")
	# Criterion prints its summary on stderr; LSan reports do not fail a
	# test by themselves, so look for them too. Counts are tests, from
	# Criterion's "Synthesis" line.
	ok=1
	ASAN_OPTIONS=detect_leaks=1 "$t" --jobs 1 >"$log/$name.out" 2>&1 || ok=0
	if grep -q -e 'ERROR: LeakSanitizer' -e 'ERROR: AddressSanitizer' \
	    -e 'runtime error:' "$log/$name.out"; then
		ok=0
	fi
	p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' "$log/$name.out" | tail -1)
	fl=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' "$log/$name.out" | tail -1)
	cr=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' "$log/$name.out" | tail -1)
	p=${p:-0}
	nf=$((${fl:-0} + ${cr:-0}))
	if [ $ok = 1 ] && [ $nf = 0 ] && [ "$p" -gt 0 ]; then
		echo "unit: $name: ok ($p tests)"
	else
		bad=$((bad + 1))
		[ $nf -gt 0 ] || nf=1   # a crash, a leak or no test at all
		echo "unit: $name: FAILED"
		sed 's/^/    /' "$log/$name.out" | tail -60
	fi
	upass=$((upass + p)); ufail=$((ufail + nf))
done
echo "unit: $upass passed, $ufail failed"
RELAY25_BIN=$bin SANITIZE=$sanitize /usr/bin/python3 "$top/tests/integration/run.py" \
	| tee "$log/integration.out"
irc=$?
ip=$(sed -n 's/^integration: \([0-9]*\) passed.*/\1/p' "$log/integration.out" | tail -1)
ifl=$(sed -n 's/^integration: [0-9]* passed, \([0-9]*\) failed.*/\1/p' "$log/integration.out" | tail -1)
ip=${ip:-0}; ifl=${ifl:-1}
[ $irc -eq 0 ] || [ "$ifl" -gt 0 ] || ifl=1
echo "check: $((upass + ip)) passed, $((ufail + ifl)) failed"
[ $ufail -eq 0 ] && [ $bad -eq 0 ] && [ "$ifl" -eq 0 ] && [ $irc -eq 0 ]
