#!/usr/bin/env bash
# Stop what start.sh started, by pid. Usage: stop.sh STATE_DIR
ST=$(realpath -m "$1")
cd /  # su postgres cannot enter a private working folder, and says so
[ -f "$ST/pids" ] || exit 0
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -f "$ST/pg/data/postmaster.pid" ] && su postgres -c "$PGBIN/pg_ctl -D $ST/pg/data -m fast -w stop" > /dev/null
while read -r name pid; do [ "$name" = postgres ] || kill "$pid" 2>/dev/null || true; done < "$ST/pids"
for _ in $(seq 1 100); do
  alive=0; while read -r name pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$ST/pids"
  [ $alive = 0 ] && break; sleep 0.1
done
while read -r name pid; do kill -0 "$pid" 2>/dev/null && echo "still alive: $name $pid" && kill -9 "$pid"; done < "$ST/pids"
true
