# Sourced by the scripts that make sure a Debian package is installed; not run on its own.

# apt_install WHO PACKAGE...: install Debian's PACKAGEs quietly, as root or with sudo, saying so as WHO.
apt_install() {
  local who=$1 sudo=""
  shift
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "$who: installing Debian's $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
