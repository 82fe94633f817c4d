# Sourced by the scripts that start the server: the address it listens on. Loopback by default: the
# server has no access control of its own yet (anyone who reaches the port can read studies, save
# labels and train), so it serves a network only when told to, behind an authenticating proxy.
#   HOST                       address to listen on (default 127.0.0.1)
#   STROKELABEL_ALLOW_NETWORK  1: allow a HOST other than loopback
HOST="${HOST:-127.0.0.1}"
for argument in "$@"; do
  if [ "$argument" = "--host" ]; then
    echo "[server] set the address with HOST=..., not --host" >&2
    exit 2
  fi
done
case "$HOST" in
  127.*|localhost|::1) ;;
  *)
    if [ "${STROKELABEL_ALLOW_NETWORK:-0}" != "1" ]; then
      echo "[server] refusing to listen on $HOST: the server has no access control of its own, so anyone who reaches" >&2
      echo "         it could read studies, overwrite labels and publish models. Serve it behind an authenticating" >&2
      echo "         reverse proxy (https) and set STROKELABEL_ALLOW_NETWORK=1, or keep the default HOST=127.0.0.1." >&2
      exit 2
    fi
    echo "[server] listening on $HOST without access control of its own (STROKELABEL_ALLOW_NETWORK=1)" >&2
    ;;
esac
