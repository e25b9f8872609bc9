"""nerfxl: neural radiance fields of any size, spread over many devices."""

__version__ = "0.1.0"
