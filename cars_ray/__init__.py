"""cars_ray: a Ray-based pipeline for fine-grained car model recognition."""

__version__ = "0.1.0"
