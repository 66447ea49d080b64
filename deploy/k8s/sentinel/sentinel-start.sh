#!/bin/sh
# Start one Redis Sentinel of the deployment (compose.sentinel.yaml, k8s/sentinel/).
#
# The sentinel monitors the primary its peers name (or, when none answers, the data node that
# says it is a primary; on the very first start FIRST_PRIMARY), so a sentinel that restarts
# does not go back to watching a node that was demoted meanwhile. Its configuration file is
# written afresh into SENTINEL_CONF, which must be writable (Sentinel rewrites it).
#
# Environment: NODE (this sentinel's name as the others reach it), SENTINELS, DATA_NODES
# (space-separated names), FIRST_PRIMARY, REDIS_PASSWORD, SENTINEL_PASSWORD; SERVICE
# (console-proxy), SENTINEL_CONF (/tmp/sentinel.conf), DOWN_AFTER_MS (5000), BIND (default: all).
set -eu
: "${NODE:?}" "${SENTINELS:?}" "${DATA_NODES:?}" "${FIRST_PRIMARY:?}"
: "${REDIS_PASSWORD:?}" "${SENTINEL_PASSWORD:?}"
SERVICE="${SERVICE:-console-proxy}"
SENTINEL_CONF="${SENTINEL_CONF:-/tmp/sentinel.conf}"
DOWN_AFTER_MS="${DOWN_AFTER_MS:-5000}"
REDIS_PORT="${REDIS_PORT:-6379}"
SENTINEL_PORT="${SENTINEL_PORT:-26379}"

primary=""
for peer in $SENTINELS; do
    [ "$peer" = "$NODE" ] && continue
    primary=$(REDISCLI_AUTH="$SENTINEL_PASSWORD" timeout 3 redis-cli -h "$peer" \
        -p "$SENTINEL_PORT" --raw SENTINEL get-master-addr-by-name "$SERVICE" \
        2>/dev/null | head -n 1) || primary=""
    [ -n "$primary" ] && break
done
if [ -z "$primary" ]; then
    for node in $DATA_NODES; do
        role=$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli -h "$node" -p "$REDIS_PORT" \
            --raw ROLE 2>/dev/null | head -n 1) || role=""
        if [ "$role" = "master" ]; then
            primary="$node"
            break
        fi
    done
fi
primary="${primary:-$FIRST_PRIMARY}"
echo "monitoring $primary as the primary of $SERVICE"

cat > "$SENTINEL_CONF" <<CONF
port $SENTINEL_PORT
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $NODE
requirepass $SENTINEL_PASSWORD
sentinel sentinel-pass $SENTINEL_PASSWORD
sentinel monitor $SERVICE $primary $REDIS_PORT 2
sentinel auth-pass $SERVICE $REDIS_PASSWORD
sentinel down-after-milliseconds $SERVICE $DOWN_AFTER_MS
sentinel failover-timeout $SERVICE 30000
sentinel parallel-syncs $SERVICE 2
CONF
if [ -n "${BIND:-}" ]; then
    echo "bind $BIND" >> "$SENTINEL_CONF"
fi
exec redis-server "$SENTINEL_CONF" --sentinel
