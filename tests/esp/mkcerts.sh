#!/bin/sh
# mkcerts.sh DIR - test certificates for the test ESP and the integration
# tests, made with the openssl CLI (EC P-256, quick, idempotent):
#
#   ca.pem / ca.key            test CA (trust anchor given to relay25)
#   server.pem / server.key    localhost, SAN DNS:localhost IP:127.0.0.1 IP:::1,
#                              signed by the CA               -> valid
#   wrong.pem / wrong.key      wrong.example, signed by the CA -> name mismatch
#   selfsigned.pem / .key      localhost, self-signed          -> untrusted
#   expired.pem / expired.key  localhost, signed by the CA, validity in 2020
#                              -> expired
#
# An existing complete set in DIR is kept (re-run is a no-op).
set -eu

dir=${1:?usage: mkcerts.sh DIR}
mkdir -p "$dir"
cd "$dir"

all="ca.pem ca.key server.pem server.key wrong.pem wrong.key \
selfsigned.pem selfsigned.key expired.pem expired.key"
complete=1
for f in $all; do [ -s "$f" ] || complete=0; done
[ "$complete" = 1 ] && exit 0

umask 077
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mkcerts.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

OSSL=${OPENSSL:-openssl}
san="subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"

key() { "$OSSL" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
	-out "$tmp/$1.key" 2>/dev/null; }

# CA
key ca
"$OSSL" req -x509 -new -key "$tmp/ca.key" -sha256 -days 3650 \
	-subj "/CN=relay25 test CA" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out "$tmp/ca.pem" 2>/dev/null

# leaf NAME CN SAN: a CA-signed leaf certificate valid from now on
leaf() {
	key "$1"
	"$OSSL" req -new -key "$tmp/$1.key" -subj "/CN=$2" -sha256 \
		-CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -days 3650 \
		-set_serial "0x$("$OSSL" rand -hex 8)" \
		-addext "basicConstraints=critical,CA:FALSE" \
		-addext "keyUsage=critical,digitalSignature" \
		-addext "extendedKeyUsage=serverAuth" \
		-addext "$3" \
		-out "$tmp/$1.pem" 2>/dev/null
}
leaf server localhost "$san"
leaf wrong wrong.example "subjectAltName=DNS:wrong.example"

# self-signed localhost (not signed by the CA)
key selfsigned
"$OSSL" req -x509 -new -key "$tmp/selfsigned.key" -sha256 -days 3650 \
	-subj "/CN=localhost" -addext "$san" \
	-addext "basicConstraints=critical,CA:FALSE" \
	-out "$tmp/selfsigned.pem" 2>/dev/null

# expired localhost, signed by the CA: OpenSSL 3.0's x509/req have no
# -not_before/-not_after, so use `openssl ca` with explicit dates.
key expired
"$OSSL" req -new -key "$tmp/expired.key" -subj "/CN=localhost" \
	-out "$tmp/expired.csr" 2>/dev/null
mkdir "$tmp/ca"
: > "$tmp/ca/index.txt"
cat > "$tmp/ca/ca.cnf" <<EOF
[ca]
default_ca = test
[test]
dir = $tmp/ca
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
x509_extensions = leaf
[anything]
commonName = supplied
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
$san
EOF
"$OSSL" rand -hex 8 > "$tmp/ca/serial"
"$OSSL" ca -batch -notext -config "$tmp/ca/ca.cnf" \
	-cert "$tmp/ca.pem" -keyfile "$tmp/ca.key" \
	-startdate 200101000000Z -enddate 200201000000Z \
	-in "$tmp/expired.csr" -out "$tmp/expired.pem" 2>/dev/null

for f in $all; do
	case $f in *.pem) chmod 644 "$tmp/$f" ;; *) chmod 600 "$tmp/$f" ;; esac
	mv -f "$tmp/$f" "$f"
done
