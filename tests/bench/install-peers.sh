#!/bin/sh
# install-peers.sh - install the peers the benchmark compares relay25 with
# (Debian packages): Postfix + SASL client modules, OpenSMTPD, msmtp
# (msmtpd), and valgrind for the instruction count.
#
# The MTA packages start system services listening on port 25 when they
# are installed. A policy-rc.d that exits 101 keeps invoke-rc.d from
# starting anything during the install; afterwards every service is
# stopped and disabled again, so nothing listens outside the benchmark
# (which starts its own instances on loopback ports with its own configs).
#
# Postfix and OpenSMTPD both provide mail-transport-agent and conflict as
# packages, so Postfix is installed as a package and OpenSMTPD's package
# is only downloaded (apt-get download) and unpacked into $SMTPD_ROOT
# (default /var/lib/relay25-bench/opensmtpd) after its library
# dependencies are installed; the bench runs $SMTPD_ROOT/usr/sbin/smtpd.
# msmtpd is in msmtp-mta on bookworm, which conflicts with postfix too: it
# is unpacked the same way into $MSMTPD_ROOT (/var/lib/relay25-bench/msmtp-mta).
#
#   sh tests/bench/install-peers.sh [--if-missing]
set -eu

SMTPD_ROOT=${SMTPD_ROOT:-/var/lib/relay25-bench/opensmtpd}
MSMTPD_ROOT=${MSMTPD_ROOT:-/var/lib/relay25-bench/msmtp-mta}
need=""
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for p in postfix libsasl2-modules msmtp valgrind; do
	have "$p" || need="$need $p"
done
[ -x "$SMTPD_ROOT/usr/sbin/smtpd" ] || need="$need opensmtpd"
command -v msmtpd >/dev/null 2>&1 || [ -x "$MSMTPD_ROOT/usr/bin/msmtpd" ] ||
	need="$need msmtp-mta"
if [ -z "$need" ]; then
	[ "${1:-}" = "--if-missing" ] || echo "install-peers: all peers installed"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "install-peers: need root to install:$need" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
saved=""
if [ -e "$policy" ]; then
	saved=$(mktemp)
	cp -p "$policy" "$saved"
fi
restore() {
	if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
}
trap restore EXIT INT TERM
printf '#!/bin/sh\nexit 101\n' > "$policy"
chmod 755 "$policy"

# answer Postfix's debconf questions: no configuration (the bench writes its
# own main.cf/master.cf in a directory of its own)
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string bench.invalid" | debconf-set-selections

apt-get update -qq || true
pkgs=""
smtpd=0
mta=0
for p in $need; do
	case $p in
	opensmtpd) smtpd=1 ;;
	msmtp-mta) mta=1 ;;
	*) pkgs="$pkgs $p" ;;
	esac
done
if [ "$smtpd" = 1 ]; then
	# OpenSMTPD's run-time libraries (not the package: it conflicts with postfix)
	pkgs="$pkgs libevent-2.1-7 libdb5.3 libssl3 libpam0g zlib1g libcrypt1"
fi
if [ -n "$pkgs" ]; then
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $pkgs
fi
if [ "$smtpd" = 1 ]; then
	dl=$(mktemp -d)
	chmod 755 "$dl"        # apt's _apt user downloads into it
	(cd "$dl" && apt-get download -qq opensmtpd)
	mkdir -p "$SMTPD_ROOT"
	dpkg-deb -x "$dl"/opensmtpd_*.deb "$SMTPD_ROOT"
	rm -rf "$dl"
	# the users smtpd drops privileges to (the package's postinst makes
	# them); its unprivileged processes chroot into /var/lib/opensmtpd/empty
	mkdir -p /var/lib/opensmtpd/empty
	chmod 755 /var/lib/opensmtpd /var/lib/opensmtpd/empty
	for u in opensmtpd opensmtpq; do
		id "$u" >/dev/null 2>&1 ||
			useradd --system --user-group --no-create-home --home-dir /var/lib/opensmtpd \
				--shell /usr/sbin/nologin "$u"
	done
	pkgs="$pkgs opensmtpd(unpacked in $SMTPD_ROOT)"
fi
if [ "$mta" = 1 ]; then
	if apt-cache show msmtpd >/dev/null 2>&1; then
		apt-get install -y -qq --no-install-recommends msmtpd   # newer Debian
	else
		dl=$(mktemp -d)
		chmod 755 "$dl"
		(cd "$dl" && apt-get download -qq msmtp-mta)
		mkdir -p "$MSMTPD_ROOT"
		dpkg-deb -x "$dl"/msmtp-mta_*.deb "$MSMTPD_ROOT"
		rm -rf "$dl"
		pkgs="$pkgs msmtp-mta(unpacked in $MSMTPD_ROOT)"
	fi
fi

# nothing of these may keep running or start at boot
for s in postfix opensmtpd msmtpd; do
	if [ -x "/etc/init.d/$s" ]; then
		"/etc/init.d/$s" stop >/dev/null 2>&1 || true
		update-rc.d "$s" disable >/dev/null 2>&1 || true
	fi
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl disable --now "$s" >/dev/null 2>&1 || true
	fi
done
echo "install-peers: installed:$pkgs"
