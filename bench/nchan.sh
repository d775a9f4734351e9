#!/usr/bin/env bash
# nginx + nchan as the comparison baseline for `hubbub bench --target nchan`.
#
#   bench/nchan.sh start    install if missing, write config, start; prints pids
#   bench/nchan.sh stop     stop the instance started by `start`
#   bench/nchan.sh pids     print "master worker" pids (for --server-pid)
#
# Not a system service: nginx runs from its own prefix dir with its own config,
# one worker process (like hubbub, a single process), listening on loopback only.
# Env: NCHAN_PREFIX (default /tmp/hubbub-nchan), NCHAN_LISTEN (127.0.0.1:8090).
set -euo pipefail

PREFIX="${NCHAN_PREFIX:-/tmp/hubbub-nchan}"
LISTEN="${NCHAN_LISTEN:-127.0.0.1:8090}"
CONF="$PREFIX/nginx.conf"
PIDFILE="$PREFIX/nginx.pid"

install_if_missing() {
  if command -v nginx >/dev/null && module_path >/dev/null; then
    return
  fi
  echo "installing nginx + nchan (apt-get)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nginx libnginx-mod-nchan >/dev/null
  # The packages start the distribution's own nginx on port 80; we only want ours.
  if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx || true
  elif [[ -f /run/nginx.pid ]]; then
    nginx -s quit 2>/dev/null || true
  fi
}

module_path() {
  local so
  for so in /usr/lib/nginx/modules/ngx_nchan_module.so /usr/share/nginx/modules/ngx_nchan_module.so; do
    [[ -f "$so" ]] && { echo "$so"; return 0; }
  done
  return 1
}

write_config() {
  mkdir -p "$PREFIX/logs" "$PREFIX/tmp"
  cat >"$CONF" <<EOF
load_module $(module_path);
worker_processes 1;
worker_rlimit_nofile 20000;
pid $PIDFILE;
error_log $PREFIX/logs/error.log warn;
daemon on;

events {
    # Above the 20000 open-files cap on purpose: nginx warns and recycles
    # connections once the array is full, before the descriptors run out.
    worker_connections 30000;
    multi_accept on;
}

http {
    access_log off;
    client_body_temp_path $PREFIX/tmp/body;
    proxy_temp_path $PREFIX/tmp/proxy;
    fastcgi_temp_path $PREFIX/tmp/fastcgi;
    uwsgi_temp_path $PREFIX/tmp/uwsgi;
    scgi_temp_path $PREFIX/tmp/scgi;
    # Publish bodies stay in memory.
    client_body_buffer_size 64k;
    client_max_body_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 300s;

    # Memory store (no Redis): messages live in shared memory.
    nchan_shared_memory_size 512M;

    server {
        listen $LISTEN backlog=8192;

        location ~ ^/pub/(.+)\$ {
            nchan_publisher;
            nchan_channel_id \$1;
            # A short buffer, as hubbub keeps: enough for a reconnect, no more.
            nchan_message_buffer_length 100;
            nchan_message_timeout 60s;
        }

        location ~ ^/sub/(.+)\$ {
            nchan_subscriber eventsource;
            nchan_channel_id \$1;
            # Like a Mercure subscriber without Last-Event-ID: only new messages.
            nchan_subscriber_first_message newest;
        }
    }
}
EOF
}

master_pid() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && cat "$PIDFILE"
}

pids() {
  local m
  m="$(master_pid)" || { echo "nchan is not running" >&2; return 1; }
  echo "$m $(pgrep -P "$m" | tr '\n' ' ')"
}

case "${1:-}" in
  start)
    if master_pid >/dev/null; then
      echo "already running: $(pids)"
      exit 0
    fi
    install_if_missing
    write_config
    nginx -t -q -c "$CONF" -p "$PREFIX" 2>"$PREFIX/logs/configtest.log" || { cat "$PREFIX/logs/configtest.log" >&2; exit 1; }
    # Its start-up warning about worker_connections vs the open-files cap is expected.
    nginx -c "$CONF" -p "$PREFIX" 2>"$PREFIX/logs/start.log" || { cat "$PREFIX/logs/start.log" >&2; exit 1; }
    for _ in $(seq 50); do
      master_pid >/dev/null && [[ -n "$(pgrep -P "$(master_pid)")" ]] && break
      sleep 0.1
    done
    read -r master workers <<<"$(pids)"
    echo "nchan listening on $LISTEN: master pid $master, worker pid(s) $workers"
    ;;
  stop)
    if m="$(master_pid)"; then
      all="$(pids)"
      kill -QUIT "$m"
      for _ in $(seq 100); do kill -0 "$m" 2>/dev/null || break; sleep 0.1; done
      # Graceful quit waits for open streams; past 10 s, end exactly the pids we started.
      for p in $all; do kill -KILL "$p" 2>/dev/null || true; done
      echo "nchan stopped"
    else
      echo "nchan was not running"
    fi
    ;;
  pids)
    pids
    ;;
  *)
    echo "usage: $0 start|stop|pids" >&2
    exit 2
    ;;
esac
