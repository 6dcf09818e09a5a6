#!/bin/sh
# Install relay25's build and test dependencies.
#   contrib/install-deps.sh              install everything (build + tests)
#   contrib/install-deps.sh --if-missing only when something is missing
# Knows apt (Debian/Ubuntu), dnf (Fedora/RHEL), apk (Alpine), brew (macOS).
set -eu

missing() {
	# Headers and tools the build and the tests need.
	for h in ev.h wolfssl/options.h ini.h criterion/criterion.h; do
		found=0
		for d in /usr/include /usr/local/include /opt/homebrew/include; do
			[ -e "$d/$h" ] && found=1
		done
		[ $found = 1 ] || return 0
	done
	command -v pkg-config >/dev/null 2>&1 || return 0
	command -v openssl >/dev/null 2>&1 || return 0
	command -v swaks >/dev/null 2>&1 || return 0
	[ -x /usr/bin/python3 ] || return 0
	/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || return 0
	return 1
}

if [ "${1:-}" = "--if-missing" ] && ! missing; then
	exit 0
fi

SUDO=
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
	SUDO=sudo
fi

if command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: installing with apt-get" >&2
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
		build-essential pkg-config clang libclang-rt-dev libev-dev libwolfssl-dev \
		libinih-dev libcriterion-dev libcrypt-dev \
		openssl swaks python3 python3-aiosmtpd valgrind procps s-nail >&2
elif command -v dnf >/dev/null 2>&1; then
	$SUDO dnf install -y gcc make pkgconf-pkg-config clang libev-devel \
		wolfssl-devel inih-devel criterion-devel libxcrypt-devel \
		openssl swaks python3 python3-aiosmtpd valgrind procps-ng >&2
elif command -v apk >/dev/null 2>&1; then
	$SUDO apk add --no-cache build-base pkgconf clang libev-dev \
		wolfssl-dev inih-dev criterion-dev libxcrypt-dev openssl swaks \
		python3 py3-aiosmtpd valgrind procps >&2
elif command -v brew >/dev/null 2>&1; then
	brew install pkg-config libev wolfssl inih criterion openssl swaks \
		python3 >&2
	python3 -m pip install --user aiosmtpd >&2
else
	echo "install-deps: no known package manager; install libev, wolfSSL," \
	     "inih, Criterion, openssl, swaks and python3-aiosmtpd yourself" >&2
	exit 1
fi
