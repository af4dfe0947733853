"""Detection-quality evaluation: WIDER FACE AP, blur recall and false positives (no Beam)."""
