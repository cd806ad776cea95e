"""Running a trained model: the one home of inference (evaluation, batch prediction, export, Serve).

- :mod:`~cars_ray.inference.model`: :class:`LoadedModel`, resolved once from a checkpoint directory or an
  exported ``.onnx`` file (its metadata read and parsed once), on the backend that hardware and
  ``backend=`` pick; :func:`is_onnx_file`, the one test of what a model path is.
- :mod:`~cars_ray.inference.backends`: PyTorch and ONNX Runtime backends, uint8 images in, probabilities out.
- :mod:`~cars_ray.inference.onnx`: the fp32 ONNX graph of a checkpoint (export, parity check, the cached export
  a CPU replica serves) and the ONNX Runtime session that reads it.

This package imports ``checkpoint``, ``models``, ``preprocessing``, ``data`` and ``storage``; ``evaluate``,
``export``, ``pipelines`` and ``serve`` import it, never the reverse.
"""
