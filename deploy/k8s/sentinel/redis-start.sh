#!/bin/sh
# Start one Redis data node of the Sentinel deployment (compose.sentinel.yaml, k8s/sentinel/).
#
# Redis keeps no files here (tickets live 30 s), so a node that restarts is empty. It must
# not come back as the primary, or its replicas would copy its emptiness: it asks the
# sentinels who the primary is and follows that node. If they still name this node, it waits
# until they promote a replica (which still holds the tickets) and then follows it. Only on
# the very first start, when no sentinel answers yet, is FIRST_PRIMARY the primary.
#
# Environment: NODE (this node's name as the others reach it), FIRST_PRIMARY, SENTINELS
# (space-separated names), REDIS_PASSWORD, SENTINEL_PASSWORD; SERVICE (console-proxy), BIND
# (an address to listen on; default: all).
set -eu
: "${NODE:?}" "${FIRST_PRIMARY:?}" "${SENTINELS:?}" "${REDIS_PASSWORD:?}" "${SENTINEL_PASSWORD:?}"
SERVICE="${SERVICE:-console-proxy}"
REDIS_PORT="${REDIS_PORT:-6379}"
SENTINEL_PORT="${SENTINEL_PORT:-26379}"

named_primary() {
    for sentinel in $SENTINELS; do
        answer=$(REDISCLI_AUTH="$SENTINEL_PASSWORD" timeout 3 redis-cli -h "$sentinel" \
            -p "$SENTINEL_PORT" --raw SENTINEL get-master-addr-by-name "$SERVICE" \
            2>/dev/null | head -n 1) || answer=""
        if [ -n "$answer" ]; then
            echo "$answer"
            return
        fi
    done
}

primary=$(named_primary)
waited=0
while [ "$primary" = "$NODE" ] && [ "$waited" -lt 120 ]; do
    echo "the sentinels still name $NODE as primary; waiting for a replica to be promoted"
    sleep 1
    waited=$((waited + 1))
    primary=$(named_primary)
done
if [ -z "$primary" ] && [ "$NODE" != "$FIRST_PRIMARY" ]; then
    primary="$FIRST_PRIMARY"
fi

# noeviction: a full Redis refuses new tickets (503) rather than drop live ones.
# min-replicas-to-write: a primary cut off from every replica stops taking writes after 10 s,
# so a partitioned old primary cannot keep minting or spending tickets on its own.
set -- --port "$REDIS_PORT" --save "" --appendonly no \
    --maxmemory 64mb --maxmemory-policy noeviction \
    --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" \
    --replica-announce-ip "$NODE" \
    --repl-diskless-sync yes --repl-diskless-sync-delay 0 --repl-diskless-load on-empty-db \
    --min-replicas-to-write 1 --min-replicas-max-lag 10
if [ -n "${BIND:-}" ]; then
    set -- "$@" --bind "$BIND"
fi
if [ -n "$primary" ] && [ "$primary" != "$NODE" ]; then
    echo "starting as a replica of $primary"
    set -- "$@" --replicaof "$primary" "$REDIS_PORT"
else
    echo "starting as the first primary"
fi
exec redis-server "$@"
