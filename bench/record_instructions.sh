#!/bin/sh
# Instructions per record of the worker's per-record step (bench/record_step.py) on one
# path: callgrind counts the whole process with and without the records run, and the
# difference is theirs. Counts do not depend on the machine's load, so one run of each
# code is enough to compare two versions. Needs valgrind (apt-get install valgrind).
#
#   bench/record_instructions.sh [EVENTS] [compiled|python|runs]
#
# RECORDS=client counts the step over records as the Kafka client makes them (default:
# decoded by the extension from record batches, as the worker gets them).
set -eu
cd "$(dirname "$0")/.."
events=${1:-60000}
path=${2:-compiled}
py=${PY:-.venv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() {
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$py" bench/record_step.py \
        --events "$events" --rounds 1 --path "$path" --records "${RECORDS:-decoded}" "$@" >/dev/null 2>"$out/log"
    callgrind_annotate "$out/cg" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}
all=$(count)
setup=$(count --setup-only)
echo "$path path: $(( (all - setup) / events )) instructions per record ($events records)"
