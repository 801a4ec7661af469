#!/usr/bin/env bash
# Start the real servers the tests use, on free loopback ports, in a fresh STATE dir.
# Usage: start.sh STATE_DIR PYTHON   — writes STATE_DIR/env (shell exports) and STATE_DIR/pids.
set -euo pipefail
ST=$(realpath -m "$1"); PY=$(realpath -s "$2"); HERE=$(cd "$(dirname "$0")" && pwd)
cd /  # su postgres cannot enter a private working folder, and says so
BIN=$(dirname "$PY")
rm -rf "$ST"; mkdir -p "$ST"; chmod 755 "$ST"; : > "$ST/pids"  # dovecot and postgres run as other users
read -r P_IMAP P_IMAPS P_REDIS P_S3 P_MASTER P_VOLUME P_FILER P_PG P_OAUTH P_OAUTH_HTTP < <("$PY" "$HERE/freeports.py" 10 | tr "\n" " "; echo)

# TLS certificate shared by Dovecot and the tests (they trust it as a CA file).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$ST/key.pem" -out "$ST/cert.pem" -days 2 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null

# OAuth 2.0 / OpenID Connect authorization server (Authlib): HTTPS for the helpdesk and the browser,
# plain HTTP on loopback for Dovecot's and the SMTP test server's token introspection.
# tok-support: a long-lived access token for support@example.test issued beforehand (older IMAP tests).
OAUTH_INTROSPECT=http://dovecot:dovecot-secret@127.0.0.1:$P_OAUTH_HTTP/introspect
"$PY" "$HERE/oauth_server.py" --https-port "$P_OAUTH" --http-port "$P_OAUTH_HTTP" \
  --cert "$ST/cert.pem" --key "$ST/key.pem" --token-lifetime 3600 \
  --user support@example.test:supportpw --user billing@example.test:billingpw \
  --seed-token tok-support=support@example.test > "$ST/oauth.log" 2>&1 & echo "oauth $!" >> "$ST/pids"

# Dovecot: standalone config, Maildir owned by the mail user, no failed-login penalty.
I=$ST/imap; mkdir -p "$I"; install -d -o mail -g mail -m 0750 "$I/mail"
# accents@: a password LOGIN cannot carry (non-ASCII), for the AUTHENTICATE PLAIN path.
printf '%s\n' 'support@example.test:{PLAIN}supportpw' 'billing@example.test:{PLAIN}billingpw' \
  'accents@example.test:{PLAIN}Pässwörd-ü1' > "$I/users"
cat > "$I/oauth2.conf.ext" <<EOC
introspection_mode = post
introspection_url = $OAUTH_INTROSPECT
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
EOC
cat > "$I/dovecot.conf" <<EOC
base_dir = $I/run
state_dir = $I/state
protocols = imap
listen = 127.0.0.1
log_path = $I/dovecot.log
ssl = yes
ssl_cert = <$ST/cert.pem
ssl_key = <$ST/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
mail_location = maildir:~/Maildir
first_valid_uid = 8
first_valid_gid = 8
mail_uid = mail
mail_gid = mail
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u $I/users
}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $I/oauth2.conf.ext
}
userdb {
  driver = static
  args = uid=mail gid=mail home=$I/mail/%u allow_all_users=yes
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $P_IMAP
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $P_IMAPS
    ssl = yes
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOC
dovecot -c "$I/dovecot.conf"

# Redis, nothing kept on disk.
redis-server --daemonize yes --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no \
  --pidfile "$ST/redis.pid" --logfile "$ST/redis.log" --dir "$ST"

# SeaweedFS as the S3 (MinIO API) endpoint; it checks signatures.
S3=$ST/s3; mkdir -p "$S3/data"
cat > "$S3/s3.json" <<'EOC'
{"identities": [{"name": "helpdesk",
  "credentials": [{"accessKey": "helpdesk-test-key", "secretKey": "helpdesk-test-secret"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOC
"$BIN/weed" mini -dir="$S3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$P_MASTER" \
  -volume.port="$P_VOLUME" -filer.port="$P_FILER" -s3.port="$P_S3" -s3.config="$S3/s3.json" \
  -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false -master.telemetry=false \
  -filer.localSocket="$S3/filer.sock" -s3.localSocket="$S3/s3.sock" > "$S3/weed.log" 2>&1 &
echo "weed $!" >> "$ST/pids"

# PostgreSQL throwaway cluster (initdb refuses root, so it runs as postgres).
PG=$ST/pg; mkdir -p "$PG"; chown postgres:postgres "$PG"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
su postgres -c "$PGBIN/initdb -D $PG/data -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync" > "$PG/initdb.log" 2>&1
su postgres -c "$PGBIN/pg_ctl -D $PG/data -l $PG/pg.log -w -o '-c listen_addresses=127.0.0.1 -p $P_PG -k $PG -c fsync=off -c autovacuum=off -c max_connections=200' start" > /dev/null

# Ready means greeting, not just an open port.
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_OAUTH_HTTP/test/health")" = 200 ] && break; sleep 0.05
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_OAUTH_HTTP/test/health")" = 200 ] \
  || { echo "the OAuth test server did not start:" >&2; cat "$ST/oauth.log" >&2; exit 1; }
"$PY" "$HERE/waitport.py" 127.0.0.1 "$P_IMAP" 30 "* OK"
echo "dovecot $(cat "$I/run/master.pid")" >> "$ST/pids"
until redis-cli -h 127.0.0.1 -p "$P_REDIS" ping 2>/dev/null | grep -q PONG; do sleep 0.05; done
echo "redis $(cat "$ST/redis.pid")" >> "$ST/pids"
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_S3/status")" = 200 ] && break; sleep 0.05
done
# pg_signal_backend: the tests drop each test database WITH (FORCE), ending connections a test left open.
psql -h 127.0.0.1 -p "$P_PG" -U postgres -qc "CREATE ROLE helpdesk LOGIN PASSWORD 'helpdeskpw' CREATEDB" \
  -c "GRANT pg_signal_backend TO helpdesk" -c "CREATE DATABASE helpdesk OWNER helpdesk"
echo "postgres $(head -1 "$PG/data/postmaster.pid")" >> "$ST/pids"

cat > "$ST/env" <<EOC
export HELPDESK_TEST_SERVICES=$ST
export HELPDESK_TEST_CA=$ST/cert.pem
export HELPDESK_TEST_IMAP_PORT=$P_IMAP
export HELPDESK_TEST_IMAPS_PORT=$P_IMAPS
export HELPDESK_TEST_DOVECOT_CONF=$I/dovecot.conf
export HELPDESK_TEST_REDIS_URL=redis://127.0.0.1:$P_REDIS/0
export HELPDESK_TEST_S3_ENDPOINT=127.0.0.1:$P_S3
export HELPDESK_TEST_S3_ACCESS_KEY=helpdesk-test-key
export HELPDESK_TEST_S3_SECRET_KEY=helpdesk-test-secret
export HELPDESK_TEST_POSTGRES_URL=postgresql+psycopg://helpdesk:helpdeskpw@127.0.0.1:$P_PG/helpdesk
export HELPDESK_TEST_POSTGRES_ADMIN_URL=postgresql+psycopg://postgres@127.0.0.1:$P_PG/postgres
export HELPDESK_TEST_OAUTH_URL=https://127.0.0.1:$P_OAUTH
export HELPDESK_TEST_OAUTH_INTROSPECT=$OAUTH_INTROSPECT
export HELPDESK_TEST_OAUTH_ADMIN=http://127.0.0.1:$P_OAUTH_HTTP
EOC
echo "services ready in $ST"
