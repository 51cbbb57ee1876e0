# Sourced by scripts/demo.sh and the *_task.sh scripts: when a step's output counts as done.
# An output is complete when its .complete marker is there: the generators stage their folders and
# write it last (llava/staged_dir.py); a script marks a training output once the training has returned.
MARKER=.complete
complete() { [ -f "$1/$MARKER" ]; }
mark_complete() { echo "$2" > "$1/$MARKER.tmp" && mv "$1/$MARKER.tmp" "$1/$MARKER"; }
# A folder that is there but not complete is what a killed run left: remove it, saying so.
clear_partial() {
  if [ -e "$1" ] && ! complete "$1"; then
    echo "   $1 is incomplete (an interrupted run?): removing it and building it again"; rm -rf "$1"
  fi
  return 0
}
# build_once OUT COMMAND...: the step that builds OUT with a command that stages OUT and marks it
# complete itself (a generator, the merge): skipped when OUT is complete, else run on a clean slate.
build_once() {
  local out=$1; shift
  if complete "$out"; then echo "   (exists)"; else clear_partial "$out"; "$@"; fi
}
# A training output from before the markers: complete when its weights file reads whole.
weights_whole() {
  [ -f "$1" ] && "$PYTHON" -c "import sys; from safetensors.torch import load_file; load_file(sys.argv[1])" "$1" 2>/dev/null
}
