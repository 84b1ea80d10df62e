"""loupe-dl-classify: hook implementations (filled in by the classification issue)."""
