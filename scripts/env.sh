# Sourced by the scripts: one shared cargo target dir, so a clean clone reuses earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/eventfold/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
