#!/usr/bin/env bash
# The Linux system service, set up as Ollama's install.sh does it: a system user, a systemd unit that runs
# `ollamalike serve` at boot, the models in that user's home. install.sh calls this for --service and
# --uninstall; it can be run by itself too.
#
#   scripts/service.sh unit      CMD [MODELS]   print the unit for the command CMD
#   scripts/service.sh install   CMD [MODELS]   create the user, write the unit, enable and start it
#   scripts/service.sh uninstall                stop and remove the unit and the user (models are kept)
#
# Settings: OLLAMALIKE_SERVICE_USER (default ollamalike), OLLAMALIKE_SERVICE_HOME (the user's home,
# default /usr/share/ollamalike; MODELS defaults to its models/), SERVICE_ROOT (a directory standing for /
# where the unit is written: the tests use it), SERVICE_DRY_RUN=1 (print the useradd/systemctl commands
# instead of running them).
set -euo pipefail

SERVICE_USER="${OLLAMALIKE_SERVICE_USER:-ollamalike}"
SERVICE_HOME="${OLLAMALIKE_SERVICE_HOME:-/usr/share/ollamalike}"
ROOTDIR="${SERVICE_ROOT:-}"
UNIT="$ROOTDIR/etc/systemd/system/ollamalike.service"

say() { printf '>>> %s\n' "$*"; }
die() { echo "service.sh: $*" >&2; exit 1; }
# the commands that change the system; printed instead with SERVICE_DRY_RUN=1
sys() { if [ "${SERVICE_DRY_RUN:-0}" = 1 ]; then echo "would run: $*"; else "$@"; fi; }

unit() {
  local cmd="$1" models="$2" path="/usr/local/bin:/usr/bin:/bin"
  case ":$path:" in *":$(dirname "$cmd"):"*) ;; *) path="$(dirname "$cmd"):$path" ;; esac
  cat <<EOF
# written by ollamalike's install.sh --service; remove with ./install.sh --uninstall
[Unit]
Description=ollamalike (Ollama-compatible LLM server)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$cmd serve
User=$SERVICE_USER
Group=$SERVICE_USER
Restart=always
RestartSec=3
Environment="PATH=$path"
Environment="HOME=$SERVICE_HOME"
Environment="OLLAMALIKE_MODELS=$models"
# settings for the server go here, e.g. Environment="OLLAMALIKE_HOST=0.0.0.0:11434"

[Install]
WantedBy=multi-user.target
EOF
}

systemd_running() { [ "${SERVICE_DRY_RUN:-0}" = 1 ] || [ -d /run/systemd/system ]; }

install_service() {
  local cmd="$1" models="$2"
  [ "$(uname -s)" = Linux ] || die "--service is for Linux with systemd (on macOS run 'ollamalike serve' yourself)"
  [ -x "$cmd" ] || die "the command $cmd is not there: install first"
  if [ -z "$ROOTDIR" ] && [ "$(id -u)" != 0 ]; then die "--service needs root: run it with sudo"; fi
  if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    say "creating the system user $SERVICE_USER (home $SERVICE_HOME)"
    sys useradd -r -s /bin/false -U -m -d "$SERVICE_HOME" "$SERVICE_USER"
  fi
  local me="${SUDO_USER:-$(id -un)}"
  if [ "$me" != root ] && [ "$me" != "$SERVICE_USER" ]; then
    say "adding $me to the group $SERVICE_USER (to read the models)"
    sys usermod -a -G "$SERVICE_USER" "$me"
  fi
  sys mkdir -p "$models"
  sys chown -R "$SERVICE_USER:$SERVICE_USER" "$models"
  # a command inside a private checkout (e.g. /root/...) is not runnable by the service user
  if [ "${SERVICE_DRY_RUN:-0}" != 1 ] && command -v runuser >/dev/null 2>&1 && \
     ! runuser -u "$SERVICE_USER" -- "$cmd" --version >/dev/null 2>&1; then
    die "the user $SERVICE_USER cannot run $cmd (is it inside a private directory?); install the single executable with './install.sh --binary --service'"
  fi
  mkdir -p "$(dirname "$UNIT")"
  unit "$cmd" "$models" > "$UNIT.tmp"
  mv "$UNIT.tmp" "$UNIT"
  say "wrote $UNIT"
  if command -v systemd-analyze >/dev/null 2>&1 && ! systemd-analyze verify "$UNIT" >/dev/null 2>&1; then
    systemd-analyze verify "$UNIT" >&2 || true
    die "systemd-analyze does not accept $UNIT"
  fi
  if systemd_running; then
    sys systemctl daemon-reload
    sys systemctl enable --now ollamalike
    say "the service is running: ollamalike list; logs: journalctl -u ollamalike"
  else
    echo "    note: systemd is not running here; start it yourself: sudo -u $SERVICE_USER $cmd serve"
  fi
}

uninstall_service() {
  if [ -z "$ROOTDIR" ] && [ "$(id -u)" != 0 ]; then die "--uninstall needs root: run it with sudo"; fi
  if [ -f "$UNIT" ]; then
    if systemd_running; then
      sys systemctl disable --now ollamalike || true
    fi
    rm -f "$UNIT"
    if systemd_running; then sys systemctl daemon-reload; fi
    say "removed $UNIT"
  else
    say "no unit at $UNIT"
  fi
  if id "$SERVICE_USER" >/dev/null 2>&1 || [ "${SERVICE_DRY_RUN:-0}" = 1 ]; then
    sys userdel "$SERVICE_USER" || true
    say "removed the user $SERVICE_USER; the models in $SERVICE_HOME are kept (delete them yourself)"
  fi
}

case "${1:-}" in
  unit) [ $# -ge 2 ] || die "usage: service.sh unit CMD [MODELS]"; unit "$2" "${3:-$SERVICE_HOME/models}" ;;
  install) [ $# -ge 2 ] || die "usage: service.sh install CMD [MODELS]"; install_service "$2" "${3:-$SERVICE_HOME/models}" ;;
  uninstall) uninstall_service ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
