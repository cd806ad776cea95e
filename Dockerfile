# The project's image: Ray 2.60 (Python 3.12, CUDA) with cars_ray installed, for KubeRay
# (deploy/kuberay/) and any Ray cluster that runs containers.
#   docker build -t ghcr.io/OWNER/cars-ray:0.1.0 .        # then push; the manifests name this image
# torch comes from PyTorch's CUDA wheel index (TORCH_INDEX), the rest from PyPI, pinned by pyproject.toml.
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py312-gpu

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /home/ray/cars_ray

# torch first, from the CUDA index, inside the bounds pyproject.toml allows; then the project without
# letting pip swap that torch for a CPU build from PyPI.
RUN pip install --index-url "${TORCH_INDEX}" "torch>=2.6,<=2.14.1" "torchvision>=0.21,<=0.29.1"
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users cars_ray cars_ray
COPY --chown=ray:users serve serve
RUN pip install -e . && python -c "import cars_ray, ray, torch, timm; assert ray.__version__.startswith('2.60')"
COPY --chown=ray:users pipelines pipelines
COPY --chown=ray:users configs configs
COPY --chown=ray:users benchmarks benchmarks

