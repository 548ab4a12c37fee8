"""Pictures: heat-map overlays, grids and the HTML index of the `visualize` stage (no file IO here)."""
