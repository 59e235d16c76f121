"""The engine's shape: imports point downward through declared layers, no
cycles (lazy imports inside functions count too), the worker processes stay
free of each other's heavy libraries, every message between processes is a
typed Struct the coordinator dispatches, and no module grows past ~500 lines
without saying why."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import msgspec
import pytest

ENGINE = Path(__file__).resolve().parents[1] / "engine"

# Bottom to top. A module may import from its own layer or below, never above;
# every module of engine/ must be listed (a new one must be placed here).
LAYERS = [
    {"facecut", "facecut.errors", "facecut.stats", "facecut.timeline", "facecut.data", "facecut.models.graph",
     "facecut.models.onnxwire",
     "facecut.models.postproc", "facecut.models.folders"},
    {"facecut.protocol", "facecut.media", "facecut.logio", "facecut.config"},
    {"facecut.procs"},
    {"facecut.fsio"},
    {"facecut.records", "facecut.ring"},
    {"facecut.workdir"},
    {"facecut.worklock"},
    {"facecut.models.base"},
    {"facecut.models.mtcnn", "facecut.models.scrfd"},
    {"facecut.models.buffalo", "facecut.models"},
    {"facecut.identity", "facecut.profile", "facecut.scan", "facecut.telemetry", "facecut.dashboard",
     "facecut.videolog", "facecut.shotdetect", "facecut.refframes", "facecut.reportsvg", "facecut.reportcards",
     "facecut.quality", "facecut.people"},
    {"facecut.decode", "facecut.infer", "facecut.resume", "facecut.status", "facecut.report", "facecut.cut",
     "facecut.doctor"},
    {"facecut.track", "facecut.coordinator"},
    {"facecut.score", "facecut.cluster.paths", "facecut.cluster.lease"},
    {"facecut.plan", "facecut.export"},
    {"facecut.cluster.task"},
    {"facecut.cluster.client"},
    {"facecut.cluster"},
    {"facecut.pipeline"},
    {"facecut.cli.options", "facecut.cli.support"},
    {"facecut.cli", "facecut.__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE).with_suffix("").parts
    name = ".".join(("facecut", *parts))
    return name.removesuffix(".__init__")


def _imports(path: Path, name: str) -> set[str]:
    """Every facecut module ``path`` imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in out if m == "facecut" or m.startswith("facecut.")}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}

    def owner(mod: str) -> str | None:  # the module a dotted name belongs to
        while mod not in files and "." in mod:
            mod = mod.rsplit(".", 1)[0]
        return mod if mod in files else None

    return {name: {o for m in _imports(p, name) if (o := owner(m)) and o != name} for name, p in files.items()}


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        # a sub-package (facecut.cut.copy) sits in its package's layer
        if name in layer or any(name.startswith(f"{m}.") and not any(name in lay for lay in LAYERS)
                                for m in layer if m != "facecut"):
            return i
    raise AssertionError(f"{name} is in no layer of tests/test_architecture.py: place it there")


def test_every_module_is_in_a_layer_and_imports_point_downward():
    graph = _graph()
    assert "facecut.protocol" in graph and "facecut.telemetry" in graph  # the walk sees the engine
    upward = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
              for a, deps in graph.items() for b in deps if _layer(b) > _layer(a)]
    assert upward == []


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]) if dep in stack else f"{node} -> {dep}")
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself: a lower module importing a higher one is reported."""
    p = tmp_path / "engine_probe.py"
    p.write_text("def f():\n    from facecut.coordinator import analyze\n    from . import cut\n")
    assert _imports(p, "facecut.records") == {"facecut.coordinator", "facecut.coordinator.analyze", "facecut", "facecut.cut"}
    assert _layer("facecut.coordinator") > _layer("facecut.records")
    with pytest.raises(AssertionError, match="no layer"):
        _layer("facecut.newcomer")


@pytest.mark.parametrize("module, banned", [
    ("facecut.decode", ("onnxruntime", "facecut.models")),  # decoder processes
    ("facecut.infer", ("av", "scenedetect")),  # inference processes
    ("facecut.protocol", ("av", "onnxruntime", "numpy")),
    ("facecut.status", ("av", "onnxruntime")),  # `facecut status` must start fast
    ("facecut.report", ("av", "onnxruntime")),
    # the `facecut` command's module: under spawn every worker process imports it again
    ("facecut.__main__", ("facecut.cli", "click", "rich", "av", "numpy", "onnxruntime")),
])
def test_worker_modules_stay_free_of_heavy_libraries(module, banned):
    code = textwrap.dedent(f"""
        import sys
        import {module}
        print(",".join(k for k in {banned!r} if k in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


def test_the_command_is_the_light_entry_point():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["facecut"] == "facecut.__main__:main"


def test_every_message_is_a_tagged_array_like_struct_the_coordinator_handles():
    from facecut import protocol
    from facecut.coordinator import Coordinator

    messages = typing.get_args(protocol.Message)
    assert len(messages) >= 15
    tags = set()
    for cls in messages:
        cfg = cls.__struct_config__
        assert issubclass(cls, msgspec.Struct) and cfg.array_like and cfg.tag == cls.__name__, cls
        tags.add(cfg.tag)
        msg = cls(*[_example(t) for t in typing.get_type_hints(cls).values()])
        assert protocol.decode(protocol.encode(msg)) == msg
    assert len(tags) == len(messages)
    to_workers = {protocol.Job, protocol.Slot, protocol.Cancel, protocol.Stop, protocol.Batch}
    assert set(Coordinator.HANDLERS) == set(messages) - to_workers
    assert all(callable(getattr(Coordinator, name)) for name in Coordinator.HANDLERS.values())
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(msgspec.msgpack.encode(["Nonsense", 1]))


def test_file_names_that_are_not_text_cross_the_pipes(tmp_path):
    """A path travels as bytes and arrives as it was; text for people that names
    such a file arrives with the odd bytes escaped instead of killing the sender."""
    import multiprocessing
    import os

    from facecut import protocol

    name = os.fsdecode(b"/in/bad\xfename.mp4")  # surrogate-escaped, as Linux hands it over
    a, b = multiprocessing.Pipe()
    job = protocol.DecodeJob(job_id=1, path=os.fsencode(name), rel="bad\ufffdname.mp4", stream_index=0, fps=2.0,
                             max_side=0)
    protocol.send(a, protocol.Job(job))
    assert protocol.recv(b).job.file == name
    protocol.send(a, protocol.Warn(f"cannot write {name}"))
    assert protocol.recv(b).text == "cannot write /in/bad\\udcfename.mp4"
    # escaped text next to bytes (a sample's payload) in one message: the bytes stay bytes
    out = [protocol.Result(1, 0, b"\x92\x01\x02", 1, ""), protocol.Result(1, 1, None, 0, f"failed on {name}")]
    got = protocol.recv(b) if protocol.send(a, protocol.Results(out, 0.1, 0.2, 0.3)) is None else None
    assert got.out[0].payload == b"\x92\x01\x02" and got.out[1].error == "failed on /in/bad\\udcfename.mp4"


def _example(t):
    from facecut import protocol

    origin = typing.get_origin(t)
    if t is int:
        return 1
    if t is float:
        return 0.5
    if t is str:
        return "x"
    if t is bool:
        return True
    if t is bytes:
        return b"\x01"
    if t == (str | None) or t == (bytes | None):
        return None
    if origin is list:
        return [_example(typing.get_args(t)[0])]
    if origin is tuple:
        return tuple(_example(a) for a in typing.get_args(t))
    if t is protocol.DecodeJob:
        return protocol.DecodeJob(job_id=1, path=b"/a", rel="a", stream_index=0, fps=2.0, max_side=0)
    if t is protocol.DecodeResult:
        return protocol.DecodeResult("ok", "", 1, 2, 0, 1.0, None, [(1, 0.5)])
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return t(*[_example(a) for a in typing.get_type_hints(t).values()])
    raise AssertionError(f"no example for {t}")


LONG_OK = "# Long module:"  # the comment that says why a module is over the limit


def test_modules_over_500_lines_say_why():
    long = []
    for p in sorted(ENGINE.rglob("*.py")):
        lines = p.read_text(encoding="utf-8").splitlines()
        if len(lines) > 500 and not any(ln.startswith(LONG_OK) for ln in lines[:60]):
            long.append(f"{p.relative_to(ENGINE)}: {len(lines)} lines")
    assert long == []
