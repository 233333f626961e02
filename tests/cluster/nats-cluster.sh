#!/usr/bin/env bash
# Starts a 3-node nats-server cluster with MQTT on loopback, for sharded runs
# (`vitalmesh run --shard I/N --broker URL,URL,URL`) and their test.
#
#   tests/cluster/nats-cluster.sh DIR [BASE_PORT]
#
# Node k (1..3) listens for MQTT on BASE_PORT+k, for NATS clients on
# BASE_PORT+10+k and for cluster routes on BASE_PORT+20+k; its JetStream
# store, config and log are in DIR/nK. Prints the broker URLs (one line,
# comma-separated, ready for --broker) once every node answers MQTT, and the
# pids to DIR/pids. Stop it with: kill $(cat DIR/pids)
#
# MQTT in NATS rides on JetStream: every QoS 1 subscription is a durable
# consumer and every session a stream entry. With the default replication
# (3) each aggregator's subscription is a Raft group; on 2 cores those
# stalled the servers' read loops for 12-14 s and aggregators' 5 s
# keep-alives lapsed (BENCHMARKS.md). One replica keeps the state on the
# node the client is connected to; vitalmesh's own end-to-end
# acknowledgements cover a node that dies (its clients reconnect elsewhere
# and the sensor nodes re-send what was not acknowledged).
set -euo pipefail
dir=${1:?usage: nats-cluster.sh DIR [BASE_PORT]}
base=${2:-18900}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
server=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$server" ] || { echo "nats-server is not installed; expected: apt-get install nats-server" >&2; exit 1; }
routes=""
for k in 1 2 3; do
  routes="$routes${routes:+, }nats-route://127.0.0.1:$((base + 20 + k))"
done
: > "$dir/pids"
urls=""
for k in 1 2 3; do
  node="$dir/n$k"
  mkdir -p "$node/store"
  cat > "$node/nats.conf" <<CONF
server_name: vm-n$k
listen: 127.0.0.1:$((base + 10 + k))
jetstream {
  store_dir: "$node/store"
  max_memory_store: 256MB
  max_file_store: 2GB
}
cluster {
  name: vitalmesh
  listen: 127.0.0.1:$((base + 20 + k))
  routes: [$routes]
}
mqtt {
  listen: 127.0.0.1:$((base + k))
  stream_replicas: 3
  consumer_replicas: 1
}
CONF
  "$server" -c "$node/nats.conf" > "$node/nats.log" 2>&1 &
  echo $! >> "$dir/pids"
  urls="$urls${urls:+,}mqtt://127.0.0.1:$((base + k))"
done
# Ready when every node accepts MQTT connections and JetStream has a
# meta leader (the MQTT listener refuses sessions before that).
for _ in $(seq 1 150); do
  ready=0
  for k in 1 2 3; do
    if grep -q "Listening for MQTT clients" "$dir/n$k/nats.log" 2>/dev/null \
      && grep -qE "JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader" "$dir"/n*/nats.log 2>/dev/null; then
      ready=$((ready + 1))
    fi
  done
  [ "$ready" = 3 ] && { echo "$urls"; exit 0; }
  sleep 0.2
done
echo "the cluster did not come up within 30 s; logs in $dir/n*/nats.log" >&2
kill $(cat "$dir/pids") 2>/dev/null || true
exit 1
