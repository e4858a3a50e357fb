"""Out-of-band notifications to patients (G1): preferences, grouping and content-free texts."""
