#!/usr/bin/env bash
# The self-supervised (SSDU) measurements of docs/self-supervised.md: tiny-2d and tiny-3d at 4x on irecon's
# synthetic data, trained on undersampled test-style files only, against the same models trained supervised.
# Usage: benchmarks/ssdu_runs.sh OUT_DIR   (single-threaded runs, up to three at a time; hours on a shared CPU).
# The runs in the docs were launched by hand with these commands, some stopped early by the time box (see there).
set -euo pipefail
out=${1:?usage: ssdu_runs.sh OUT_DIR}
export OMP_NUM_THREADS=1
size=(--slices 6 --kspace-size 96 96 --recon-size 96 96)
common=(--val "$out/data/val" --device cpu --threads 1 --accelerations 4 --center-fractions 0.08)
irecon synth "$out/data/undersampled" --split test --volumes 6 "${size[@]}" --acceleration 4 --center-fraction 0.08 --seed 1
irecon synth "$out/data/full" --split train --volumes 6 "${size[@]}" --seed 1
irecon synth "$out/data/val" --split val --volumes 2 "${size[@]}" --seed 2

ssdu() { irecon train "$out/data/undersampled" --self-supervised "${common[@]}" "$@"; }
supervised() { irecon train "$out/data/full" "${common[@]}" "$@"; }
two_d=(--model tiny-2d --epochs 6)
three_d=(--model tiny-3d --slab 6 --epochs 15 --no-parametric-output)
for seed in 0 1; do
  ssdu "${two_d[@]}" --ssdu-seen-weight 1 --seed "$seed" --out "$out/2d/ssdu-seed$seed" > "$out/2d-ssdu-seed$seed.log" 2>&1 &
  supervised "${two_d[@]}" --seed "$seed" --out "$out/2d/supervised-seed$seed" > "$out/2d-supervised-seed$seed.log" 2>&1
  wait
  ssdu "${two_d[@]}" --no-parametric-output --ssdu-seen-weight 1 --seed "$seed" --out "$out/2d/ssdu-nohead-seed$seed" \
    > "$out/2d-ssdu-nohead-seed$seed.log" 2>&1
done
supervised "${two_d[@]}" --no-parametric-output --seed 0 --out "$out/2d/supervised-nohead-seed0" > "$out/2d-sup-nohead.log" 2>&1 &
ssdu "${two_d[@]}" --no-parametric-output --ssdu-seen-weight 0 --seed 0 --out "$out/2d/ssdu-nohead-pure-seed0" \
  > "$out/2d-ssdu-nohead-pure.log" 2>&1
wait
for seed in 0 1; do
  ssdu "${two_d[@]}" --no-parametric-output --ssdu-seen-weight 0.1 --seed "$seed" \
    --out "$out/2d/ssdu-nohead-w0.1-seed$seed" > "$out/2d-ssdu-nohead-w0.1-seed$seed.log" 2>&1 &
done
wait
cp -r "$out/2d/ssdu-seed0" "$out/2d/ssdu-seed0-long"
irecon train --out "$out/2d/ssdu-seed0-long" --resume --epochs 12 > "$out/2d-ssdu-long.log" 2>&1
ssdu "${three_d[@]}" --ssdu-seen-weight 1 --seed 0 --out "$out/3d/ssdu-nohead-seed0" > "$out/3d-ssdu.log" 2>&1 &
ssdu "${three_d[@]}" --ssdu-seen-weight 0.1 --seed 0 --out "$out/3d/ssdu-nohead-w0.1-seed0" > "$out/3d-ssdu-w0.1.log" 2>&1 &
supervised "${three_d[@]}" --seed 0 --out "$out/3d/supervised-nohead-seed0" > "$out/3d-supervised.log" 2>&1
wait
python "$(dirname "$0")/ssdu_table.py" "$out"/2d/* "$out"/3d/*
