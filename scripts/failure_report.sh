#!/usr/bin/env bash
# Print what helps explain a test run that started at $2 (seconds since the
# epoch) and ended with status $1: free memory and disk, and the end of the
# logs of the Ray session that the run started, if any. A Ray driver whose
# raylet or GCS server dies exits at once with status 1, before pytest can
# print anything, so these logs are the only trace of the cause.
set -uo pipefail
echo "== pytest ended with status $1; machine state follows =="
free -m
df -h /tmp /dev/shm 2>/dev/null
logs="${RAY_TMPDIR:-/tmp}/ray/session_latest/logs"
if [ -d "$logs" ] && [ "$(stat -L -c %Y "$logs")" -ge "$2" ]; then
    for pattern in raylet.out raylet.err gcs_server.out gcs_server.err 'python-core-driver-*.log'; do
        for file in "$logs"/$pattern; do
            [ -s "$file" ] || continue
            echo "== last lines of $file =="
            tail -n 40 "$file"
        done
    done
    # Ray's own log lines read "[date time,ms E pid tid] file:line: message",
    # with E for errors and F or C for fatal ones.
    errors=' [EFC] [0-9]+ [0-9]+\] |ERROR|FATAL|Traceback'
    echo "== error lines in the session's other logs =="
    grep -l -E "$errors" "$logs"/* 2>/dev/null | head -n 20 | while read -r file; do
        grep -h -E "$errors" "$file" | tail -n 5 | sed "s|^|$(basename "$file"): |"
    done
fi
exit 0
