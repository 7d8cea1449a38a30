#!/usr/bin/env bash
# The client matrix (issue #16): see run.py. Run from anywhere; needs the repository's .venv (README set-up).
set -euo pipefail
exec python3 "$(dirname "$0")/run.py" "$@"
