"""The DAVIS simulator/driver: frame sources, FCN interpolation (eq. 13), DVS models (eq. 14)."""
