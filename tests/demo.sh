#!/bin/sh
# demo.sh RELAY25_BIN - relay25 end to end on loopback, in four steps:
#   1. make test certificates (a CA and a localhost certificate)
#   2. start the test ESP: SMTP with STARTTLS, AUTH required (tests/esp/esp.py)
#   3. start relay25 in front of it with a generated configuration
#   4. send one message with swaks, as a plain unauthenticated client would,
#      and show what the ESP stored: the message and its envelope, with the
#      AUTH user relay25 logged in as and the TLS version it used.
# Everything runs on 127.0.0.1; both processes are stopped on exit (the
# temporary directory is kept so the stored files can be looked at). Exit 0
# only if the message arrived at the ESP.
set -eu

bin=${1:?usage: demo.sh RELAY25_BIN}
here=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
command -v swaks >/dev/null 2>&1 || { echo "demo: swaks is not installed" >&2; exit 1; }
[ -x "$bin" ] || { echo "demo: $bin is not an executable" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/relay25-demo.XXXXXX")
esp_pid=
relay_pid=
ok=0
cleanup() {
	[ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
	[ -n "$esp_pid" ] && kill "$esp_pid" 2>/dev/null || true
	# bounded wait for both to go, then force
	i=0
	while [ $i -lt 50 ]; do
		alive=0
		[ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null && alive=1
		[ -n "$esp_pid" ] && kill -0 "$esp_pid" 2>/dev/null && alive=1
		[ $alive = 0 ] && break
		sleep 0.1
		i=$((i + 1))
	done
	[ -n "$relay_pid" ] && kill -9 "$relay_pid" 2>/dev/null || true
	[ -n "$esp_pid" ] && kill -9 "$esp_pid" 2>/dev/null || true
	if [ "$ok" = 1 ]; then
		echo "(the demo's files stay in $tmp; remove with: rm -rf $tmp)"
	else
		echo "(files kept for inspection in $tmp)"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

step() { printf '\n==> %s\n' "$*"; }
json() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
# wait_file FILE SECONDS
wait_file() {
	i=0
	while [ ! -s "$1" ] && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
	[ -s "$1" ]
}

user=demo@example.test
pass=$("$PY" -c "import secrets; print(secrets.token_urlsafe(12))")

step "1. Test certificates (a CA, and a certificate for localhost signed by it)"
sh "$here/esp/mkcerts.sh" "$tmp/certs"
echo "   $tmp/certs/ca.pem, $tmp/certs/server.pem"

step "2. The test ESP: STARTTLS, then AUTH (user $user) required before MAIL"
"$PY" "$here/esp/esp.py" --dir "$tmp/esp" --host 127.0.0.1 \
	--cert "$tmp/certs/server.pem" --key "$tmp/certs/server.key" \
	--starttls-port 0 --user "$user" --password "$pass" \
	--ready-file "$tmp/esp.ready" 2>"$tmp/esp.log" &
esp_pid=$!
wait_file "$tmp/esp.ready" 20 || { echo "ESP did not start:"; cat "$tmp/esp.log"; exit 1; }
esp_port=$(json "$tmp/esp.ready" starttls)
echo "   listening on 127.0.0.1:$esp_port (pid $esp_pid)"

step "3. relay25 in front of it"
port=$(free_port)
umask 077
cat > "$tmp/relay25.ini" <<EOF
[server]
listen = 127.0.0.1:$port
hostname = relay.demo
log_level = info

[upstream]
host = localhost
port = $esp_port
tls = starttls
ca_file = $tmp/certs/ca.pem
username = $user
password = $pass
EOF
sed 's/^password = .*/password = ********/' "$tmp/relay25.ini" | sed 's/^/   | /'
"$bin" -c "$tmp/relay25.ini" 2>"$tmp/relay25.log" &
relay_pid=$!
i=0
until "$PY" -c "
import socket,sys
s=socket.create_connection(('127.0.0.1',$port),1); s.settimeout(2)
sys.exit(0 if s.recv(100).startswith(b'220') else 1)" 2>/dev/null; do
	i=$((i + 1))
	if [ $i -ge 100 ] || ! kill -0 "$relay_pid" 2>/dev/null; then
		echo "relay25 did not start:"; cat "$tmp/relay25.log"; exit 1
	fi
	sleep 0.1
done
echo "   relay25 listening on 127.0.0.1:$port (pid $relay_pid)"

step "4. One message through relay25 with swaks (plain SMTP, no TLS, no AUTH)"
swaks --server "127.0.0.1:$port" --ehlo demo.client \
	--from app@example.test --to someone@example.test \
	--header "Subject: relay25 demo" --body "Hello through relay25." \
	--suppress-data --timeout 30 2>&1 | sed 's/^/   /' || true

step "What the ESP stored"
if wait_file "$tmp/esp/0001.json" 10; then
	echo "   message:  $tmp/esp/0001.eml"
	echo "   envelope: $tmp/esp/0001.json"
	"$PY" - "$tmp/esp/0001.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
for k in ("mail_from", "rcpt_tos", "auth_user", "tls_version", "size", "queue_id"):
    print("     %-12s %s" % (k, m[k]))
EOF
	echo "   the message as stored (exact bytes received, after un-dot-stuffing):"
	sed 's/^/   | /' "$tmp/esp/0001.eml"
	echo "   relay25's log line for it:"
	grep -i "queue\|status=" "$tmp/relay25.log" | tail -n 3 | sed 's/^/   | /' || true
	ok=1
	printf '\ndemo: OK - the message went through relay25 over TLS with AUTH\n'
else
	printf '\ndemo: FAILED - nothing arrived at the ESP. relay25 log:\n'
	sed 's/^/   | /' "$tmp/relay25.log"
	exit 1
fi
