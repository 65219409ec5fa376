"""ROS 2 message types of evpipe: ``event_camera_msgs/EventPacket`` and ``evpipe_msgs/Decision``.

The field lists below are the one definition: ``msg_text`` writes them as ``.msg`` text (what
rosbag2 files store and ``rosbags`` reads), ``idl_text`` as the IDL the rosidl generators take,
and ``load`` builds the rclpy message classes from the generators and C compiler that the ``ros2``
extra's pip wheels bring (rosidl_generator_c/py, rosidl_typesupport_c, _fastrtps_c,
_introspection_c; gcc/g++), once, into a cache folder, then imports them.

``event_camera_msgs/EventPacket`` follows the message definition of ros-event-camera's
event_camera_msgs (``msg_ros2/EventPacket.msg``): a ``std_msgs/Header``, sensor ``height`` and
``width`` (px), ``seq`` (counts packets, so a subscriber sees drops), ``time_base`` (ns; "event
ros time = time_base + decoded event_time"), ``encoding`` (``"evt3"`` here), ``is_bigendian`` and
the encoded ``events`` bytes. Field names and types equal the original's, so the type name and
the rosidl type hash (RIHS01) are the same and any event_camera_msgs subscriber matches.

``evpipe_msgs/Decision`` carries the fields of a decision record (docs/decisions.md) with fixed
types: a null ``class`` is ``class_id = -1``, null integers -1, null strings empty; ``class`` is
``class_id`` because ``class`` is a keyword of C++ and Python.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass

HEADER = ("std_msgs/Header", "header")


@dataclass(frozen=True)
class Message:
    package: str
    name: str
    fields: tuple[tuple[str, str], ...]  # (msg type, field name)

    @property
    def type_name(self) -> str:
        """``package/msg/Name``, as rosbag2 and ``rosbags`` name it."""
        return f"{self.package}/msg/{self.name}"


EVENT_PACKET = Message("event_camera_msgs", "EventPacket", (
    HEADER, ("uint32", "height"), ("uint32", "width"), ("uint64", "seq"), ("uint64", "time_base"),
    ("string", "encoding"), ("bool", "is_bigendian"), ("uint8[]", "events")))

DECISION = Message("evpipe_msgs", "Decision", (
    HEADER, ("string", "stream"), ("int64", "segment"), ("string", "segment_name"),
    ("int32", "class_id"), ("string", "class_name"), ("float64", "score"), ("float64", "margin"),
    ("string", "rule"), ("string", "reason"), ("int64", "t"), ("int64", "t_start"),
    ("int64", "events"), ("int64", "decoder_ns"), ("string", "label"), ("int64", "origin_ns"),
    ("int64", "e2e_latency_ns"), ("uint64", "seq"), ("int64", "published_ns"),
    ("int64", "publish_latency_ns")))

MESSAGES = (EVENT_PACKET, DECISION)
_IDL_TYPES = {"bool": "boolean", "float64": "double", "float32": "float", "string": "string",
              **{f"{s}int{b}": f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)}}
_EXTRA = "ros2"


class RosUnavailable(RuntimeError):
    """The ``ros2`` extra (rclpy and the rosidl generators) is not installed or cannot build."""


def msg_text(message: Message) -> str:
    """The ``.msg`` definition of ``message``."""
    return "".join(f"{kind} {name}\n" for kind, name in message.fields)


def _idl_type(kind: str) -> str:
    if kind.endswith("[]"):
        return f"sequence<{_idl_type(kind[:-2])}>"
    if "/" in kind:
        package, name = kind.split("/")
        return f"{package}::msg::{name}"
    return _IDL_TYPES[kind]


def idl_text(message: Message) -> str:
    """The IDL definition of ``message`` (what rosidl_adapter would make of ``msg_text``)."""
    includes = sorted({f'#include "{kind.split("/")[0]}/msg/{kind.split("/")[1]}.idl"\n'
                       for kind, _ in message.fields if "/" in kind})
    members = "".join(f"      {_idl_type(kind)} {name};\n" for kind, name in message.fields)
    return (f"{''.join(includes)}\nmodule {message.package} {{\n  module msg {{\n"
            f"    struct {message.name} {{\n{members}    }};\n  }};\n}};\n")


def _prefix() -> pathlib.Path:
    """The prefix the ROS wheels install into (share/, include/, lib/): this Python's."""
    return pathlib.Path(sys.prefix)


def cache_folder() -> pathlib.Path:
    """Where the built packages live: ``$EVPIPE_ROS_MSGS``, else a folder of the user cache named
    after a hash of the definitions and the Python prefix (so a change rebuilds)."""
    if os.environ.get("EVPIPE_ROS_MSGS"):
        return pathlib.Path(os.environ["EVPIPE_ROS_MSGS"])
    key = hashlib.sha256(repr((MESSAGES, str(_prefix()))).encode()).hexdigest()[:16]
    base = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    return base / "evpipe" / f"ros2-msgs-{key}"


def _generate(package: str, messages: list[Message], root: pathlib.Path) -> None:
    """Run the rosidl generators (C, Python and the three C type supports) into ``root/<kind>``."""
    try:
        from rosidl_generator_c.cli import GenerateC
        from rosidl_generator_py.cli import GeneratePython
        from rosidl_typesupport_c.cli import GenerateCTypesupport
        from rosidl_typesupport_fastrtps_c.cli import GenerateFastRTPSCTypesupport
        from rosidl_typesupport_introspection_c.cli import GenerateIntrospectionCTypesupport
    except ImportError as exc:
        raise RosUnavailable(f"the rosidl generators are missing ({exc.name}); install the "
                             f"'{_EXTRA}' extra: pip install -e '.[{_EXTRA}]'") from None
    idl = root / "idl"
    (idl / "msg").mkdir(parents=True)
    files = []
    for message in messages:
        (idl / "msg" / f"{message.name}.idl").write_text(idl_text(message))
        files.append(f"{idl}:msg/{message.name}.idl")
    os.environ.setdefault("AMENT_PREFIX_PATH", str(_prefix()))
    # the wheels declare each generator's entry points twice (two metadata folders): harmless,
    # rosidl_cli keeps the first and warns about the second
    logging.getLogger("rosidl_cli.entry_points").setLevel(logging.ERROR)
    for kind, generator in (("c", GenerateC), ("fastrtps_c", GenerateFastRTPSCTypesupport),
                            ("introspection_c", GenerateIntrospectionCTypesupport),
                            ("typesupport_c", GenerateCTypesupport), ("py", GeneratePython)):
        generator(kind).generate(package, files, [str(_prefix() / "share")],
                                 root / kind / package)


def _compile(root: pathlib.Path, out: pathlib.Path, package: str) -> None:
    """Compile the generated sources into ``out/lib`` and the Python package ``out/<package>``."""
    prefix = _prefix()
    lib = out / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{root / kind}" for kind in ("c", "fastrtps_c", "introspection_c")]
    includes += [f"-I{prefix / 'include'}"] + [f"-I{d}" for d in sorted((prefix / "include").iterdir())
                                                if d.is_dir()]
    import numpy

    includes += [f"-I{sysconfig.get_paths()['include']}", f"-I{numpy.get_include()}"]
    # the folder is renamed once built: our own libraries are found relative to each file
    links = [f"-L{prefix / 'lib'}", f"-Wl,-rpath,{prefix / 'lib'}", f"-L{lib}",
             "-Wl,-rpath,$ORIGIN:$ORIGIN/../lib"]
    deps = sorted({kind.split("/")[0] for m in MESSAGES if m.package == package
                   for kind, _ in m.fields if "/" in kind} | {"builtin_interfaces"})

    def build(compiler: str, sources: list[pathlib.Path], target: pathlib.Path, libraries: list[str]):
        command = [compiler, "-shared", "-fPIC", "-O2", "-w", *includes, *map(str, sources), "-o",
                   str(target), f"-Wl,-soname,{target.name}", *links,
                   *(f"-l{name}" for name in libraries)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RosUnavailable(f"building {target.name} failed: {done.stderr.strip()[-600:]}")

    def sources(kind: str, pattern: str) -> list[pathlib.Path]:
        return sorted((root / kind / package).rglob(pattern))

    own = f"{package}__rosidl_generator_c"
    build("gcc", sources("c", "*.c"), lib / f"lib{own}.so",
          [f"{d}__rosidl_generator_c" for d in deps] + ["rosidl_runtime_c", "rcutils"])
    build("g++", sources("fastrtps_c", "*.cpp"), lib / f"lib{package}__rosidl_typesupport_fastrtps_c.so",
          [own] + [f"{d}__rosidl_typesupport_fastrtps_c" for d in deps]
          + ["rosidl_typesupport_fastrtps_c", "fastcdr", "rosidl_runtime_c", "rcutils"])
    build("gcc", sources("introspection_c", "*.c"),
          lib / f"lib{package}__rosidl_typesupport_introspection_c.so",
          [own] + [f"{d}__rosidl_typesupport_introspection_c" for d in deps] + ["rosidl_runtime_c"])
    build("g++", sources("typesupport_c", "*.cpp"), lib / f"lib{package}__rosidl_typesupport_c.so",
          [own, "rosidl_typesupport_c", "rosidl_runtime_c", "rcutils"])
    py = root / "py" / package
    build("gcc", sorted((py / "msg").glob("*_s.c")), lib / f"lib{package}__rosidl_generator_py.so",
          [own] + [f"{d}__rosidl_generator_py" for d in deps] + ["rosidl_runtime_c", "rcutils"])
    shutil.copytree(py / "msg", out / package / "msg", ignore=shutil.ignore_patterns("*.c"))
    (out / package / "__init__.py").write_text("")
    build("gcc", [py / f"_{package}_s.ep.rosidl_typesupport_c.c"],
          out / package / f"{package}_s__rosidl_typesupport_c.so",
          [f"{package}__rosidl_generator_py", f"{package}__rosidl_typesupport_c", own,
           "rosidl_runtime_c", "rcutils"])


def build(dest: pathlib.Path) -> None:
    """Generate and compile every package of ``MESSAGES`` into ``dest`` (made atomically, so
    processes that build at once never see half a folder)."""
    if shutil.which("gcc") is None or shutil.which("g++") is None:
        raise RosUnavailable("building the ROS 2 message types needs gcc and g++")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        for package in dict.fromkeys(m.package for m in MESSAGES):
            _generate(package, [m for m in MESSAGES if m.package == package], work / "src" / package)
            _compile(work / "src" / package, work / "out", package)
        try:
            (work / "out").rename(dest)
        except OSError:
            if not dest.is_dir():  # another process finished first otherwise
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def environment(folder: pathlib.Path | None = None) -> dict[str, str]:
    """Variables under which another process (a robot's script, a test) imports the built
    packages: PYTHONPATH and LD_LIBRARY_PATH extended with ``folder`` (default: the cache)."""
    folder = folder or cache_folder()
    env = {}
    for key, value in (("PYTHONPATH", folder), ("LD_LIBRARY_PATH", folder / "lib")):
        env[key] = os.pathsep.join(p for p in (str(value), os.environ.get(key, "")) if p)
    return env


def load() -> dict[str, type]:
    """The rclpy message classes by ``Message.type_name``, built on first use.

    RosUnavailable names the ``ros2`` extra when rclpy or the generators are missing.
    """
    try:
        import rclpy  # noqa: F401
    except ImportError:
        raise RosUnavailable(f"rclpy is not installed; install the '{_EXTRA}' extra: "
                             f"pip install -e '.[{_EXTRA}]'") from None
    folder = cache_folder()
    if not folder.is_dir():
        build(folder)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    # rosidl_typesupport_c dlopens lib<package>__rosidl_typesupport_fastrtps_c.so by name, which
    # the loader resolves to an already loaded library of that soname, whatever LD_LIBRARY_PATH
    # said when this process started
    for library in sorted((folder / "lib").glob("*.so")):
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    classes = {}
    for message in MESSAGES:
        module = importlib.import_module(f"{message.package}.msg")
        classes[message.type_name] = getattr(module, message.name)
    return classes
