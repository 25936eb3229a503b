"""Evaluation: paired metrics against a target with the replicate floor, the benchmark suite,
and the self-contained HTML report (DESIGN.md section 6).

Modules: :mod:`.metrics` (L1, PSNR/SSIM per plane, emphysema), :mod:`.nps` (noise power
spectrum), :mod:`.sharpness` (edge width, MTF50), :mod:`.agreement` (CCC, Wilcoxon, gap
closed), :mod:`.grid` (target-grid alignment), :mod:`.paired` (one paired evaluation),
:mod:`.cases` / :mod:`.benchmark` (the benchmark suite), :mod:`.figures` / :mod:`.report`.
Held-out physics: :mod:`.independent_sim` (a second, independent simulator, evaluation only),
:mod:`.heldout_benchmark` (every method on its cases) and :mod:`.bm4d_baseline` (optional BM4D).
"""
