#!/bin/bash
# Edit a notebook as a plain Python file (jupytext percent format), then write it back.
#   tools/nb.sh edit nbs/02_transfer.ipynb   -> .nbpy/nbs/02_transfer.py (cells as `# %%` blocks, tags kept)
#   tools/nb.sh sync nbs/02_transfer.ipynb   -> the .py written back into the notebook, then nbdev_clean on it
# Only the named notebook is touched, so several people can edit different notebooks at once.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
cmd=${1:?usage: tools/nb.sh edit|sync NOTEBOOK}; nb=${2:?usage: tools/nb.sh edit|sync NOTEBOOK}
py=.nbpy/${nb%.ipynb}.py
case $cmd in
  edit) mkdir -p "$(dirname "$py")"; $BIN/jupytext --quiet --to py:percent "$nb" -o "$py"; echo "$py" ;;
  sync) test -f "$py" || { echo "no $py: run tools/nb.sh edit $nb first"; exit 1; }
        if [ -f "$nb" ]; then $BIN/jupytext --quiet --to ipynb --update "$py" -o "$nb"; else $BIN/jupytext --quiet --to ipynb "$py" -o "$nb"; fi
        $BIN/nbdev_clean --fname "$nb"; echo "$nb" ;;
  *) echo "usage: tools/nb.sh edit|sync NOTEBOOK"; exit 1 ;;
esac
