# Sourced by every shell entry point (inference.sh, scripts/*.sh), and the one place that says:
#   * where they run: the repository root, whatever the caller's directory;
#   * which Python runs them: $PYTHON when set; else the active environment's (a virtualenv's
#     $VIRTUAL_ENV, or a conda environment other than base); else the project's .venv, which
#     `make demo` / `make test` create; else python3 from the PATH.  So a new shell after
#     `make demo` needs no activation for the shell scripts;
#   * -h / --help: print the calling script's header comment and exit.
LLAVA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$LLAVA_ROOT"

if [ -z "${PYTHON:-}" ]; then
  _candidates=("${VIRTUAL_ENV:-}")
  [ "${CONDA_DEFAULT_ENV:-base}" != base ] && _candidates+=("${CONDA_PREFIX:-}")
  _candidates+=("$LLAVA_ROOT/.venv")
  for _env in "${_candidates[@]}"; do
    if [ -n "$_env" ] && [ -x "$_env/bin/python" ]; then PYTHON=$_env/bin/python; break; fi
  done
  PYTHON=${PYTHON:-$(command -v python3 || command -v python || echo python3)}
  unset _candidates _env
fi
export PYTHON

# The header comment of the script that sourced this file (its lines after the shebang).
llava_usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
llava_python_ok() {
  "$PYTHON" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('torch') and u.find_spec('transformers')))" \
    2>/dev/null
}
LLAVA_NO_PYTHON="$PYTHON has no torch / transformers. Run \`make install\` (it creates .venv here, which these scripts
then use), activate the environment you installed this project into, or set PYTHON"

# --help: the usage, the Python that would run (so "which Python?" has an answer), and the flags of the
# Python module the script wraps, when it names one in LLAVA_HELP_MODULE.
for _arg in "$@"; do
  case "$_arg" in
    -h|--help)
      llava_usage
      if llava_python_ok; then
        echo; echo "Python: $PYTHON"
        [ -z "${LLAVA_HELP_MODULE:-}" ] || { echo; "$PYTHON" -m "$LLAVA_HELP_MODULE" --help; }
      else
        echo; echo "Python: $LLAVA_NO_PYTHON."
      fi
      exit 0 ;;
  esac
done
unset _arg

# Fail here, saying what to do, rather than deep inside a step with "No module named torch".
llava_python_ok || { echo "$(basename "$0"): $LLAVA_NO_PYTHON." >&2; exit 2; }
