#!/bin/sh
# make fuzz: run every libFuzzer binary for SECONDS on a fresh copy of its
# seed corpus (tests/fuzz/corpus/NAME for BUILD/fuzz_NAME), so the committed
# corpus never grows. Prints the executions per target; exits non-zero if
# any target crashed, leaked, timed out or did not report its statistics.
#   tests/fuzz/run.sh SECONDS BUILD FUZZ_BIN...
set -u
secs=$1; build=$2; shift 2
top=$(cd "$(dirname "$0")/../.." && pwd)
case $secs in ''|*[!0-9]*) echo "fuzz: FUZZ_SECONDS must be a number" >&2; exit 2;; esac
fail=0
summary=""
for bin in "$@"; do
	name=$(basename "$bin"); name=${name#fuzz_}
	seed="$top/tests/fuzz/corpus/$name"
	work="$build/run/$name"
	art="$build/artifacts/$name"
	log="$build/run/$name.log"
	rm -rf "$work" "$art"
	mkdir -p "$work" "$art"
	if [ -d "$seed" ]; then
		cp -p "$seed"/. "$work"/ 2>/dev/null || cp -p "$seed"/* "$work"/ 2>/dev/null
	fi
	echo "fuzz: $name: ${secs}s on $(ls "$work" | wc -l) seed input(s) ..."
	# -timeout: one input taking longer than 10 s is a bug (hang);
	# -rss_limit_mb: memory per session is supposed to be bounded
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	"$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
		-rss_limit_mb=2048 -artifact_prefix="$art/" "$work" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	if [ $rc -ne 0 ] || [ -z "$execs" ] || ls "$art"/* >/dev/null 2>&1; then
		fail=$((fail + 1))
		echo "fuzz: $name: FAILED (exit $rc); log $log, artifacts in $art:"
		ls -l "$art" 2>/dev/null | sed 's/^/    /'
		grep -n -A40 -e '^==[0-9]*==ERROR' -e 'runtime error:' \
			-e 'deadly signal' -e 'Assertion' "$log" | head -80 | sed 's/^/    /'
		summary="$summary
  $name: FAILED after ${execs:-?} executions"
	else
		echo "fuzz: $name: ok, $execs executions in ${secs}s"
		summary="$summary
  $name: $execs executions"
	fi
done
echo "fuzz: per target:$summary"
echo "fuzz: $(($# - fail)) passed, $fail failed"
[ $fail -eq 0 ]
