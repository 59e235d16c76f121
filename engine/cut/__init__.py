"""Stage 7, cut: write every planned clip, reading each source once.

``cut_plan`` reads ``WORK/plan.json`` and writes each clip to
``OUT/<source folder>/<clip id>.mp4`` (``fsio.output_folder``: the source's
stem made safe plus a hash of its relative path; nothing is written outside OUT):

* **Stream copy** (default): one demux pass per source; every packet goes to
  every clip whose span covers it (one output container per open clip, opened
  when its span starts, closed when it ends). A copied clip starts on the
  keyframe at or before the planned start (found from packet flags while
  demuxing: the packets since the last keyframe are kept, so no seek) and ends
  before the first video packet at or after the planned end; with B-frames that
  can lose the last few frames, which ``cut_end`` records. Audio streams are kept
  (copied, or transcoded to AAC when MP4 cannot hold them: WMA, PCM, MP2...),
  data/subtitle streams are not. MKV only for a video codec MP4 refuses.
* **Re-encode fallback** (copy mode, per clip): a clip stream copy cannot make
  well -- no container takes the video by copy (WMV2), the keyframe lies more
  than ``max_lead_in`` before the start, or the muxer refused the packets -- is
  re-encoded by the accurate pass in a second read of the source, its reason in
  ``Clip.encoded``; nothing that decodes is left unwritten.
* **Accurate** (``accurate=True``): decode once per source, re-encode (libx264,
  AAC) so clips start and end exactly on the planned frames. Only the GOPs that
  hold a clip are decoded.

Times in plan.json are seconds relative to the source's first frame
(``SourcePlan.t0`` seconds of stream time); a span is half-open, ``[start, end)``.
Both passes map timestamps through ``facecut.timeline`` exactly as the analysis
did (reordering, gaps, discontinuities), and no clip is cut across a backward jump.

Every clip is written under a temporary name in its final folder and renamed
when complete, and carries its own description in the container's ``comment``
tag (id, mode, span, actual cut): a re-run skips a clip whose file exists and
whose tag and duration match, and adopts a finished clip that plan.json does
not know yet (a run killed between the rename and the plan write). Temporary
files of dead runs are removed. plan.json is rewritten (atomically) every few
seconds and at the end; ``plan.params["cut"]`` records the output folder and mode.
A :class:`CutCache` remembers the clips written or checked in this process, so a
streamed run's final pass opens none of them again.

Modules (imports point down this list, never up)::

    orchestrator  cut_plan / cut_clips: per source, skip what is there, run a
                  pass, record the result in plan.json; SourceCut, CutResult,
                  CutProgress
    copy_pass     the stream-copy pass (_CopyPass)
    encode_pass   the re-encode pass (_EncodePass): accurate mode and fallback
    audio         what both passes share for audio: AAC transcoding and the
                  packet-level audio clock (_AacAudio)
    spans         one clip being written (the span of each mode) and its
                  output file: temporary name, abort, finish
    streams       the source's main video stream; what the copy pass can copy
    files         clip paths and tags, finished clips (CutCache), sidecars,
                  temporary files of killed runs
"""

from facecut.cut.files import TAG_PREFIX, CutCache, clean_temp_files, clip_relpath, read_clip_tag
from facecut.cut.orchestrator import CutProgress, CutResult, Progress, SourceCut, cut_clips, cut_plan

__all__ = [
    "TAG_PREFIX",
    "CutCache",
    "CutProgress",
    "CutResult",
    "Progress",
    "SourceCut",
    "clean_temp_files",
    "clip_relpath",
    "cut_clips",
    "cut_plan",
    "read_clip_tag",
]
