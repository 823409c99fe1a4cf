"""The catalog: ownership, runs, delegation, selections, footprint index, usage and culling."""
