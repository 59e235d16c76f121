"""facecut engine: folders of long videos -> short, swap-ready face clips.

Data flows one way, one module per stage:
scan -> decode (+ shot cuts) -> ring -> infer -> log -> track -> score -> cut -> report.
"""

__version__ = "0.1.0"
