"""Git-RSCLIP: score, rank and label imagery against text (on the model and geo layers)."""
