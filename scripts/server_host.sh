# Sourced by the scripts that start the server: the address it listens on and its access control.
#   HOST                       address to listen on (default 127.0.0.1)
#   STROKELABEL_USERS_FILE     users and roles (python -m strokelabel.access add-user FILE NAME --role ROLE):
#                              turns access control on (MONAI Label's auth against the app's built-in
#                              realm on 127.0.0.1:AUTH_PORT, default PORT+1); needed to listen on a network
#   STROKELABEL_ALLOW_NETWORK  1: listen on a network without it (only behind an authenticating proxy)
HOST="${HOST:-127.0.0.1}"
for argument in "$@"; do
  if [ "$argument" = "--host" ]; then
    echo "[server] set the address with HOST=..., not --host" >&2
    exit 2
  fi
done
if [ -n "${STROKELABEL_USERS_FILE:-}" ]; then
  if [ ! -f "$STROKELABEL_USERS_FILE" ]; then
    echo "[server] STROKELABEL_USERS_FILE=$STROKELABEL_USERS_FILE does not exist (python -m strokelabel.access add-user ...)" >&2
    exit 2
  fi
  export STROKELABEL_USERS_FILE="$(cd "$(dirname "$STROKELABEL_USERS_FILE")" && pwd)/$(basename "$STROKELABEL_USERS_FILE")"
  export MONAI_LABEL_AUTH_ENABLE=true
  export MONAI_LABEL_AUTH_REALM_URI="http://127.0.0.1:${AUTH_PORT:-$((${PORT:-8000} + 1))}/realms/strokelabel"
  echo "[server] access control on: users in $STROKELABEL_USERS_FILE" >&2
fi
case "$HOST" in
  127.*|localhost|::1) ;;
  *)
    if [ -z "${STROKELABEL_USERS_FILE:-}" ] && [ "${STROKELABEL_ALLOW_NETWORK:-0}" != "1" ]; then
      echo "[server] refusing to listen on $HOST without access control: anyone who reaches it could read studies," >&2
      echo "         overwrite labels and publish models. Give users and roles (STROKELABEL_USERS_FILE, see the README)," >&2
      echo "         or serve it behind an authenticating reverse proxy and set STROKELABEL_ALLOW_NETWORK=1," >&2
      echo "         or keep the default HOST=127.0.0.1." >&2
      exit 2
    fi
    [ -n "${STROKELABEL_USERS_FILE:-}" ] || echo "[server] listening on $HOST without access control of its own (STROKELABEL_ALLOW_NETWORK=1)" >&2
    ;;
esac
