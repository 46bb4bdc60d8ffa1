#!/bin/sh
# Rebuild the shipped "fast" weights (dashnet_ros/weights/{snn,ann,ann_nat}_fast.pt) from
# scratch: procedural training streams (seeds 1000-1199), held-out streams (seeds 0-19) for
# the evaluation, then the three trainings.  See dashnet_ros/train/README.md.
#
#   sh dashnet_ros/train/reproduce.sh [WORK_DIR [WEIGHTS_DIR]]
#
# WORK_DIR (default out/train) holds the datasets and the runs (weights, .state for --resume,
# .eval.json with the held-out numbers); the finished weights are copied to WEIGHTS_DIR
# (default dashnet_ros/weights).
# Every step resumes where it stopped when run again (complete datasets are skipped; add
# --resume to a training line to continue it).  Run from the repository root with the
# package importable (the .venv, or PYTHONPATH=.).
set -eu
WORK=${1:-out/train}
W=${2:-dashnet_ros/weights}
PY=${PYTHON:-python}
mkdir -p "$WORK/runs" "$W"
R="$WORK/runs"
dashnet() { "$PY" -m dashnet_ros.cli "$@"; }

# 1. hybrid DAVIS datasets (linear x7 interpolation, per-pixel DVS model, 30 Hz APS)
dashnet dataset build scenes:1000-1199 --frames 240 --interpolator linear --out "$WORK/data"
dashnet dataset build scenes:0-19 --frames 240 --interpolator linear --out "$WORK/heldout"

# 2. the SNN and the two ANNs (one CPU thread each: the SNN runs beside the ANNs).  The
#    shipped SNN was trained in two stages (the second a --resume to a larger --steps,
#    which restarts the cosine schedule), reproduced as such here; the ANNs in one run each.
H="$WORK/heldout"
D="$WORK/data"
# the ANNs were trained on the first 100 training streams (seeds 1000-1099): a folder of links
A="$WORK/data_1000_1099"
mkdir -p "$A"
for i in $(seq 1000 1099); do ln -sf "../$(basename "$D")/scenes_$i.h5" "$A/scenes_$i.h5"; done
( "$PY" -m dashnet_ros.train.snn --data "$D" --out "$R/snn_fast.pt" --steps 1500 --seed 0 -q &&
  "$PY" -m dashnet_ros.train.snn --data "$D" --out "$R/snn_fast.pt" --steps 2500 --seed 0 --resume \
      --eval-data "$H" ) &
SNN=$!
"$PY" -m dashnet_ros.train.ann --data "$A" --out "$R/ann_fast.pt" --steps 24000 --seed 0 --giou-weight 0.1 \
    --eval-data "$H"
"$PY" -m dashnet_ros.train.ann --no-attention --data "$A" --out "$R/ann_nat_fast.pt" --steps 24000 --seed 0 \
    --giou-weight 0.1 --eval-data "$H"
wait $SNN
cp "$R/snn_fast.pt" "$R/ann_fast.pt" "$R/ann_nat_fast.pt" "$W/"
