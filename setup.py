"""sketchjax: a JAX/Flax research codebase for human free-hand sketches."""

import setuptools

setuptools.setup(
    name="sketchjax",
    version="0.1.0",
    description="Stroke models, explainability and retrieval for free-hand sketches in JAX.",
    packages=setuptools.find_packages(include=["sketchjax", "sketchjax.*"]),
    package_data={"sketchjax": ["draw_page/*"]},
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "chex>=0.1.90,<0.2",
        "tensorflow-datasets>=4.9.9,<4.10",
        "array-record>=0.8,<0.9",
        # TFDS 4.9.10 needs it on Python >= 3.9 but declares it only below 3.9
        # (tensorflow/datasets#11212).
        "importlib-resources>=6,<8",
        "grain>=0.2.12,<0.3",
        "ml-collections>=1.1,<2",
        "absl-py>=2.1,<3",
        "numpy>=2.0,<3",
        "matplotlib>=3.9,<4",
        # TensorBoard event files without TensorFlow (flax/clu writers import TF).
        "tensorboardX>=2.6,<3",
        # Image decoding (JPEG/PNG) for the photo and sketch readers.
        "Pillow>=10,<14",
        # The TFLite flatbuffer schema's generated reader, for the MobileNetV2 port
        # (rather than a flatbuffer parser of our own).
        "tflite>=2.18,<3",
        # Pretrained ResNet/ViT weights in the model hubs' format, read as numpy.
        "safetensors>=0.4,<1",
        # The assisted-drawing page (tasks/draw.py): Starlette routes the requests and
        # serves the page, uvicorn is the ASGI server under it (no hand-written HTTP).
        "starlette>=1.0,<2",
        "uvicorn>=0.30,<1",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10", "pytest-xdist>=3.6,<4",
            # The official TFLite runtime, to check the MobileNetV2 port against.
            "ai-edge-litert>=1.2,<3",
            # Reference average precision for the retrieval metrics.
            "scikit-learn>=1.4,<2",
            # Starlette's test client for the drawing server; the page's browser test drives
            # Debian's chromium through chromium-driver (installed by .ci/run).
            "httpx2>=2,<3", "selenium>=4.20,<5",
        ],
        # The official CrossX-DFL steps in PyTorch (benchmarks/official_torch.py), timed
        # beside ours in one window; not in CI (several GB of CUDA wheels).
        "official": ["torch>=2.13", "torchvision>=0.28"],
    },
)
