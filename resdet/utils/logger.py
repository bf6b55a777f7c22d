"""Logging set-up: the console on rank 0, OUTPUT_DIR/log.txt (log.txt.rank{N} on other ranks)."""
import logging
import os
import sys
from typing import Optional

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"
_HANDLER_TAG = "_resdet_handler"


def setup_logger(output_dir: Optional[str] = None, rank: int = 0, name: str = "resdet",
                 level: int = logging.INFO) -> logging.Logger:
    """Configure the `name` logger; calling it again replaces the handlers it added before."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_TAG, False)]:
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT)
    handlers = []
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stdout))
    if output_dir:
        filename = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, filename)))
    for handler in handlers:
        setattr(handler, _HANDLER_TAG, True)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def environment_info() -> str:
    """Python, torch, torchvision, fvcore versions and the devices: the first lines of every log."""
    import fvcore
    import torch
    import torchvision

    lines = [
        f"python {sys.version.split()[0]}",
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, fvcore {fvcore.__version__}",
        f"CPU threads {torch.get_num_threads()}",
    ]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"CUDA {torch.version.cuda}: {', '.join(names)}")
    else:
        lines.append("CUDA not available")
    return "\n".join(lines)
