#!/usr/bin/env bash
# Print what helps explain a failed test run, briefly enough to stay in the
# end of a CI log. Arguments: pytest's exit status, the run's start time in
# seconds since the epoch, and the file that names the last test started.
#
# A Ray driver whose GCS server dies exits with status 1 and no pytest
# summary, so the last test started and the logs of the Ray session that the
# run started are the only trace of the cause.
set -uo pipefail
status="$1"
started="$2"
current_test_file="${3:-}"

echo
echo "== pytest ended with status $status =="
if [ -s "$current_test_file" ]; then
    echo "last test started: $(cat "$current_test_file")"
fi
free -m | head -n 2
df -h /tmp /dev/shm 2>/dev/null

logs="${RAY_TMPDIR:-/tmp}/ray/session_latest/logs"
if [ -d "$logs" ] && [ "$(stat -L -c %Y "$logs")" -ge "$started" ]; then
    for pattern in raylet.out gcs_server.out 'python-core-driver-*.log'; do
        for file in "$logs"/$pattern; do
            [ -s "$file" ] || continue
            echo "== last lines of $(basename "$file") =="
            tail -n 8 "$file" | cut -c 1-240
        done
    done

    # Ray's log lines read "[date time,ms E pid tid] file:line: message", with
    # E for errors and F or C for fatal ones.
    errors=' [EFC] [0-9]+ [0-9]+\] |FATAL|Traceback'
    echo "== error lines in the other logs of the Ray session =="
    grep -H -E "$errors" "$logs"/*.err "$logs"/*.log 2>/dev/null | tail -n 12 | cut -c 1-240
fi
exit 0
