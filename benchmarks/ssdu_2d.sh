#!/usr/bin/env bash
# Self-supervised (SSDU, test-style files only) vs supervised tiny-2d at 4x on irecon's synthetic data, two seeds.
# Usage: benchmarks/ssdu_2d.sh OUT_DIR   (single-threaded; about 10 minutes per run on a shared CPU)
set -euo pipefail
out=${1:?usage: ssdu_2d.sh OUT_DIR}
export OMP_NUM_THREADS=1
size=(--slices 6 --kspace-size 96 96 --recon-size 96 96)
mask=(--accelerations 4 --center-fractions 0.08)
run=(--model tiny-2d --epochs 6 --device cpu --threads 1 "${mask[@]}")
irecon synth "$out/data/undersampled" --split test --volumes 6 "${size[@]}" --acceleration 4 --center-fraction 0.08 --seed 1
irecon synth "$out/data/full" --split train --volumes 6 "${size[@]}" --seed 1
irecon synth "$out/data/val" --split val --volumes 2 "${size[@]}" --seed 2
for seed in 0 1; do
  irecon train "$out/data/undersampled" --val "$out/data/val" --out "$out/ssdu-seed$seed" --seed "$seed" \
    --self-supervised "${run[@]}" > "$out/ssdu-seed$seed.log" 2>&1 &
  irecon train "$out/data/full" --val "$out/data/val" --out "$out/supervised-seed$seed" --seed "$seed" \
    "${run[@]}" > "$out/supervised-seed$seed.log" 2>&1
  wait
done
