"""Running an exported detector (the ONNX file of `tools/export.py`) in onnxruntime, without
the compiled ops and without the model code: this module imports neither `detection._C` nor
`detection.modeling` (tests/deploy/test_runtime.py checks it in a process where both fail to
import).

The file carries what the host side needs in its metadata (`metadata_props`, written by
`export_metadata`): the test-time resize and normalisation, the mask binarisation threshold, the
drawing threshold and the class names. `OnnxRuntimeDetector` (or `OpenVinoDetector`, the same
file read by OpenVINO) then stands in for the PyTorch
model where the tools call one (`model(images: ImageList) -> list[BoxList]` with "scores",
"labels" and "mask" [D, 1, M, M] probabilities, in the coordinates of the resized input), so that
`Predictor` (resize, normalise, paste masks with `paste_prediction`) and the COCO evaluation run
on it unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from detection.data.transforms.transforms import Compose, Normalize, Resize, ToTensor
from detection.structures.bounding_box import BoxList
from detection.structures.image_list import ImageList

METADATA_KEY = "detection"  # one JSON document under this metadata_props key
OUTPUT_NAMES = ("boxes", "scores", "labels", "masks")


def export_metadata(
    cfg, class_names: dict[int, str], category_ids: dict[int, int]
) -> dict[str, str]:
    """`{METADATA_KEY: json}` for the ONNX file's metadata_props: INPUT.* test-time resize and
    normalisation, SIZE_DIVISIBILITY (informative: the graph pads itself), the mask and drawing
    thresholds, and `classes` as `[label, name, JSON category id]` rows."""
    inp = cfg.INPUT
    doc = {
        "min_size": int(inp.MIN_SIZE_TEST),
        "max_size": int(inp.MAX_SIZE_TEST),
        "pixel_mean": [float(v) for v in inp.PIXEL_MEAN],
        "pixel_std": [float(v) for v in inp.PIXEL_STD],
        "to_bgr255": bool(inp.TO_BGR255),
        "size_divisibility": int(cfg.DATALOADER.SIZE_DIVISIBILITY),
        "mask_threshold": float(cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD),
        "score_threshold_vis": float(cfg.TEST.SCORE_THRESHOLD_VIS),
        "classes": [
            [int(k), str(class_names[k]), int(category_ids.get(k, k))] for k in sorted(class_names)
        ],
    }
    return {METADATA_KEY: json.dumps(doc)}


def preprocess_mismatch(metadata: dict[str, Any], cfg) -> list[str]:
    """The INPUT.* keys whose test-time value differs from what the file was exported with."""
    inp = cfg.INPUT
    pairs = {
        "INPUT.MIN_SIZE_TEST": (metadata["min_size"], int(inp.MIN_SIZE_TEST)),
        "INPUT.MAX_SIZE_TEST": (metadata["max_size"], int(inp.MAX_SIZE_TEST)),
        "INPUT.PIXEL_MEAN": (metadata["pixel_mean"], [float(v) for v in inp.PIXEL_MEAN]),
        "INPUT.PIXEL_STD": (metadata["pixel_std"], [float(v) for v in inp.PIXEL_STD]),
        "INPUT.TO_BGR255": (metadata["to_bgr255"], bool(inp.TO_BGR255)),
    }
    return [f"{k} {a} in the file, {b} in the config" for k, (a, b) in pairs.items() if a != b]


class ExportedDetector:
    """The exported detector called as the PyTorch model is in eval mode:
    `__call__(images: ImageList) -> list[BoxList]`; subclasses run the file (`run`).

    Each image runs alone (the file takes batch 1): `images.tensors[i]` cropped to
    `images.image_sizes[i]`; the graph pads it to SIZE_DIVISIBILITY itself. A batch of several
    images therefore gives what the PyTorch model gives on each image alone (with GroupNorm,
    batch padding changes PyTorch's results slightly).
    Raises ValueError when the file has no metadata of `tools/export.py`."""

    backend = ""

    def __init__(self, path: str, outputs: tuple, raw_metadata: str | None) -> None:
        if tuple(outputs) != OUTPUT_NAMES or raw_metadata is None:
            raise ValueError(
                f"{path} is not a detector exported by tools/export.py (outputs {outputs}, "
                f"metadata {'present' if raw_metadata else 'missing'})"
            )
        self.path = path
        self.metadata: dict[str, Any] = json.loads(raw_metadata)

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        """The raw outputs (boxes, scores, labels, masks) for one `float32 [1, 3, h, w]` image."""
        raise NotImplementedError

    def eval(self) -> "ExportedDetector":
        return self  # the tools put the model in eval mode

    def __call__(self, images: ImageList) -> list[BoxList]:
        out = []
        batch = images.tensors.detach().to("cpu", torch.float32).numpy()
        for i, (h, w) in enumerate(images.image_sizes):
            boxes, scores, labels, masks = self.run(batch[i : i + 1, :, :h, :w])
            det = BoxList(torch.from_numpy(boxes), (w, h), mode="xyxy")
            det.add_field("scores", torch.from_numpy(scores))
            det.add_field("labels", torch.from_numpy(labels).long())
            det.add_field("mask", torch.from_numpy(masks))
            out.append(det)
        return out

    def transform(self) -> Compose:
        """The test-time `(image uint8[H, W, 3] BGR, None) -> (Tensor[3, h, w], None)` the
        file was exported with (`build_transforms(cfg, is_train=False)`)."""
        m = self.metadata
        return Compose(
            [
                Resize((m["min_size"],), m["max_size"]),
                ToTensor(),
                Normalize(m["pixel_mean"], m["pixel_std"], m["to_bgr255"]),
            ]
        )

    def class_info(self) -> tuple[dict[int, str], dict[int, int]]:
        """(label -> class name, label -> JSON category id) as exported."""
        rows = self.metadata["classes"]
        return {k: name for k, name, _ in rows}, {k: cid for k, _, cid in rows}


class OnnxRuntimeDetector(ExportedDetector):
    """The ONNX file in onnxruntime (CPU provider, `threads` intra-op threads)."""

    backend = "onnxruntime"

    def __init__(self, path: str, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        outputs = tuple(o.name for o in self.session.get_outputs())
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        super().__init__(path, outputs, raw)

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(image, np.float32)})


class OpenVinoDetector(ExportedDetector):
    """The ONNX file in OpenVINO (CPU plugin, float32, `threads` threads), `DeformConv` mapped to
    `DeformableConvolution` (`detection.deploy.openvino_model`)."""

    backend = "openvino"

    def __init__(self, path: str, threads: int = 1) -> None:
        import onnx

        from detection.deploy.openvino_model import compile_model

        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        self.compiled = compile_model(path, threads)
        outputs = tuple(o.get_any_name() for o in self.compiled.outputs)
        super().__init__(path, outputs, props.get(METADATA_KEY))

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        result = self.compiled(np.ascontiguousarray(image, np.float32))
        return [result[o] for o in self.compiled.outputs]


BACKENDS = {"onnxruntime": OnnxRuntimeDetector, "openvino": OpenVinoDetector}


def exported_detector(path: str, backend: str = "onnxruntime", threads: int = 1):
    """`ExportedDetector` of `backend` ("onnxruntime" or "openvino") over the ONNX file."""
    return BACKENDS[backend](path, threads)


def onnx_predictor(path: str, threads: int = 1, backend: str = "onnxruntime"):
    """A `Predictor` (resize, normalise, run, paste masks: the same code as for the PyTorch
    model) over the ONNX file `path` in `backend`."""
    from detection.engine.predictor import Predictor

    model = exported_detector(path, backend, threads)
    return Predictor(
        model,
        torch.device("cpu"),
        transform=model.transform(),
        size_divisible=0,  # the graph pads
        mask_threshold=model.metadata["mask_threshold"],
    )
