"""loupe-trainer: hook implementations (filled in by the anomaly and classification issues)."""
