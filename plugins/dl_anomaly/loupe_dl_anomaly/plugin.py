"""loupe-dl-anomaly: hook implementations (filled in by the anomaly issue)."""
