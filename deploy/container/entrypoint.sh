#!/bin/sh
# The image's entrypoint: `serve …`, `relay …` (or any other execserver command) run as is;
# options alone go to `serve`. exec: the server is PID 1 and gets the signals.
set -eu
case "${1:-serve}" in
    -*) exec execserver serve "$@" ;;
    *) exec execserver "$@" ;;
esac
