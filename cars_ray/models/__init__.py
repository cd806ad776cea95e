"""Models: backbones by name with their weights, classification heads, and the factory."""

from cars_ray.models.factory import CarClassifier, create_model

__all__ = ["CarClassifier", "create_model"]
