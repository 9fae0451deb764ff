"""A benchmark file, validated and expanded into its matrix of cells (``parse``), and the settings it holds."""
