"""The on-instance watchdog for Vast.ai: the instance stops itself at its deadline, with no key
of ours on it and no gpushop process running.

Vast injects into every container a key limited to that one instance (`CONTAINER_API_KEY`,
reference: "create instance"); the watchdog uses it to ask for a stop (the reference says
nothing of that key destroying), and the next `gpushop reconcile` deletes the stopped instance.

- The deadline is a file on the instance, `DEADLINE` (UTC epoch seconds), written at the first
  start and never overwritten by the start script, so gpushop can move it over SSH
  (`move_deadline_command`) when a rental's max duration is extended. The watchdog reads it at
  least every minute; an unreadable file keeps the last deadline read (never "no deadline").
- At the deadline it asks for the stop until the API says yes: retries with exponential backoff
  and jitter (5 s to 5 min), a 429's Retry-After honoured, for as long as the instance lives
  (not one attempt, and never given up after 30 minutes: a running GPU bills until it stops).
- It sends no signal to any process: on Vast a container's PID 1 usually ignores SIGTERM (the old
  `kill -TERM 1` fallback did not stop the billing), and off a container PID 1 is the machine's.
- The key is read from the environment by the script itself and handed to curl on its standard
  input (or read by python3 from its environment): it is on no command line `ps` shows.
- One watchdog per instance (a pid file), whatever starts the start script again.
"""

from __future__ import annotations

import math
import shlex

FOLDER = "/workspace/.gpushop"
DEADLINE = f"{FOLDER}/deadline"
SCRIPT = f"{FOLDER}/watchdog.sh"
LOG = f"{FOLDER}/watchdog.log"

WATCHDOG = r"""#!/bin/sh
# gpushop watchdog (providers/vastai/watchdog.py): stops this instance at the deadline in @DEADLINE@
D=@DEADLINE@
P=@FOLDER@/watchdog.pid
H=@FOLDER@/watchdog.headers
U="@URL@/api/v0/instances/${CONTAINER_ID:-${VAST_CONTAINERLABEL#C.}}/"
if [ -f "$P" ] && grep -q watchdog.sh "/proc/$(cat "$P")/cmdline" 2>/dev/null; then exit 0; fi
echo $$ > "$P"
say() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }
last=
while :; do
  d=$(cat "$D" 2>/dev/null)
  case "$d" in ''|*[!0-9]*) d=$last ;; esac
  [ -n "$d" ] || { say "no deadline in $D yet"; sleep 60; continue; }
  [ "$d" = "$last" ] || say "deadline $d"
  last=$d
  now=$(date +%s)
  [ "$now" -ge "$d" ] && break
  left=$((d - now)); [ "$left" -gt 60 ] && left=60
  sleep "$left"
done
put() {
  if command -v curl >/dev/null 2>&1; then
    printf 'header = "Authorization: Bearer %s"\n' "$CONTAINER_API_KEY" |
      curl -sS -m 15 -K - -o /dev/null -D "$H" -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/json' -d '{"state": "stopped"}' "$U"
  elif command -v python3 >/dev/null 2>&1; then
    python3 - "$U" "$H" <<'PY'
import os, sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1], data=b'{"state": "stopped"}', method="PUT", headers={
    "Authorization": "Bearer " + os.environ.get("CONTAINER_API_KEY", ""),
    "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=15) as r:
        code, headers = r.status, r.headers
except urllib.error.HTTPError as e:
    code, headers = e.code, e.headers
except Exception:
    code, headers = 0, {}
open(sys.argv[2], "w").write("".join(f"{k}: {v}\n" for k, v in dict(headers).items()))
print(code)
PY
  else
    echo 0
  fi
}
delay=5
while :; do
  code=$(put 2>/dev/null)
  case "$code" in
    2??) say "stop accepted ($code)"; rm -f "$P"; exit 0 ;;
  esac
  wait=$delay
  ra=$(tr -d '\r' < "$H" 2>/dev/null | awk 'tolower($1) == "retry-after:" { print $2 }' | tail -n 1)
  case "$ra" in ''|*[!0-9]*) ;; *) [ "$code" = 429 ] && wait=$ra ;; esac
  jitter=$(( $(od -An -N2 -tu2 /dev/urandom 2>/dev/null | tr -d ' ' || echo 0) % (wait / 4 + 1) ))
  say "stop refused (${code:-no answer}): again in $((wait + jitter)) s"
  sleep $((wait + jitter))
  delay=$((delay * 2)); [ "$delay" -gt 300 ] && delay=300
done
"""


def script(url: str) -> str:
    """The watchdog itself, for an API at `url` (the server root, e.g. https://console.vast.ai)."""
    return (
        WATCHDOG.replace("@DEADLINE@", DEADLINE).replace("@FOLDER@", FOLDER).replace("@URL@", url)
    )


def start_command(url: str, deadline: float) -> str:
    """The lines of the instance's start script that write the deadline (unless gpushop already
    did), install the watchdog and start it detached."""
    text = script(url)
    if "GPUSHOP_WATCHDOG" in text:
        raise ValueError("the API URL breaks the watchdog's here-document")
    return "\n".join(
        [
            f"mkdir -p {FOLDER}",
            f"[ -s {DEADLINE} ] || echo {math.ceil(deadline)} > {DEADLINE}",
            f"cat > {SCRIPT} <<'GPUSHOP_WATCHDOG'",
            text.rstrip("\n"),
            "GPUSHOP_WATCHDOG",
            f"nohup sh {SCRIPT} >> {LOG} 2>&1 < /dev/null &",
        ]
    )


def move_deadline_command(deadline: float) -> str:
    """A command that moves the watchdog's deadline (run over SSH), atomically."""
    when = math.ceil(deadline)
    tmp = shlex.quote(f"{DEADLINE}.tmp")
    return f"mkdir -p {FOLDER} && echo {when} > {tmp} && mv {tmp} {DEADLINE}"
