"""resdet: ResNet classification pretraining and Faster R-CNN detection in one toolkit."""
from setuptools import find_packages, setup

# TEST.COCO_EVAL_BACKEND faster_coco_eval (binary wheels); earlier releases pin numpy<2 and need plotly and pandas
FASTER_COCO_EVAL = "faster-coco-eval>=1.6.8"

setup(
    name="resdet",
    version="0.1.0",
    description="ResNet pretraining and Faster R-CNN (C4 and FPN) detection, Detectron-style",
    packages=find_packages(include=["resdet", "resdet.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "pycocotools>=2.0.6",
        "opencv-python-headless>=4.6",
        "pyyaml>=5.1",
        "tqdm>=4.29",
        "tensorboard>=2.10",
        "matplotlib>=3.5",
        "numpy>=1.21",
    ],
    extras_require={
        # the tests prove both COCO backends equal; ruff is `make lint` (pinned: a newer ruff may add rules)
        "dev": ["pytest>=7", "hypothesis>=6", FASTER_COCO_EVAL, "ruff==0.17.6"],
        "fast-eval": [FASTER_COCO_EVAL],
        # tools/export_model.py --format onnx (torch.onnx writes with onnxscript) and running the file
        "export": ["onnx>=1.18", "onnxscript>=0.7", "onnxruntime>=1.20"],
    },
)
