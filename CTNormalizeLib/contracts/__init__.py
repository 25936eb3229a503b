"""Typed contracts for what crosses the engine/Slicer boundary: process events, the run
report, the emphysema and radiomics results, and the model card. Both sides read and
write these; nobody guesses keys."""
